"""Row sources streamed from disk: CSV (gz, preamble, categorical and text columns), NumPy
arrays memory-mapped, text folders; the in-memory path as a cache choice."""

from __future__ import annotations

import csv
import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from dlcli.data import load_data
from dlcli.data.rows import RowSplit
from dlcli.data.stream import ArraySplit
from dlcli.errors import DataError
from dlcli.recipe.loader import load_recipe
from dlcli.train import train

COLORS = ("red", "green", "blue", "teal")


def _csv(path: Path, n: int = 160, seed: int = 0, preamble: int = 2) -> Path:
    rng = np.random.default_rng(seed)
    with gzip.open(path, "wt", newline="", encoding="utf-8") as fh:
        for i in range(preamble):
            fh.write(f"# exported by a lab instrument, line {i + 1}\n")
        w = csv.writer(fh)
        w.writerow(["a", "b", "color", "label"])
        for i in range(n):
            label = int(rng.integers(0, 2))
            # the last category appears only in the last rows: a small fit sample misses it
            color = COLORS[3] if i >= n - 5 else COLORS[int(rng.integers(0, 3))]
            w.writerow([f"{rng.normal(label * 3, 0.7):.4f}", f"{rng.normal(-2 * label, 0.7):.4f}", color, label])
    return path


RECIPE = """
name: rows
seed: 4
data:
  source: csv
  path: d.csv.gz
  skip_rows: 2
  label_column: label
  categorical_columns: [color]
  normalize: standard
  cache: {cache}
  fit_samples: {fit}
  split: {{validation: 0.2, test: 0.0}}
model: {{architecture: mlp, units: [8]}}
train:
  epochs: 2
  batch_size: 16
  steps_per_execution: 1
  optimizer: {{name: adam, learning_rate: 0.01}}
  callbacks: {{tensorboard: false}}
"""


def _recipe(tmp_path: Path, cache: str = "none", fit: int = 4096, name: str = "r.yaml") -> Path:
    p = tmp_path / name
    p.write_text(RECIPE.format(cache=cache, fit=fit))
    return p


def _weights(run: Path) -> str:
    return json.loads((run / "env.json").read_text())["weights_sha256"]


def test_csv_streams_rows_and_equals_the_in_memory_path(tmp_path):
    _csv(tmp_path / "d.csv.gz")
    streamed = load_data(load_recipe(_recipe(tmp_path, "none")))
    memory = load_data(load_recipe(_recipe(tmp_path, "memory")))
    assert isinstance(streamed.train, RowSplit) and isinstance(memory.train, ArraySplit)
    assert streamed.sizes == memory.sizes == {"train": 128, "validation": 32}
    # the streamed rows hold no features, only row numbers and labels
    assert streamed.train.members.dtype == np.int64 and not hasattr(streamed.train.rows, "x")
    assert np.array_equal(streamed.train.x, memory.train.x)  # bit-equal featurization
    assert np.array_equal(streamed.train.y, memory.train.y)
    batches = [x for x, _ in streamed.splits["validation"].dataset(10).as_numpy_iterator()]
    assert [len(b) for b in batches] == [10, 10, 10, 2]
    assert np.array_equal(np.concatenate(batches), memory.splits["validation"].x)
    # auto: memory within the budget, streamed above it
    assert isinstance(load_data(load_recipe(_recipe(tmp_path, "auto"))).train, ArraySplit)
    tiny = load_data(load_recipe(_recipe(tmp_path, "auto"), ["data.cache_budget_mb=0.0001"]))
    assert isinstance(tiny.train, RowSplit)


def test_csv_cache_choice_changes_nothing_but_speed(tmp_path):
    _csv(tmp_path / "d.csv.gz")
    digests = {}
    for cache in ("none", "memory"):
        run = tmp_path / f"run-{cache}"
        res = train(load_recipe(_recipe(tmp_path, cache)), run, progress="none", pipeline=False)
        assert res.metrics["validation"]["accuracy"] >= 0.7
        digests[cache] = _weights(run)
    assert len(set(digests.values())) == 1, digests


def test_vocabulary_from_the_whole_split_normalization_from_a_sample(tmp_path):
    _csv(tmp_path / "d.csv.gz", n=400)
    bundle = load_data(load_recipe(_recipe(tmp_path, "none", fit=2)))
    pre = bundle.preprocessor
    assert pre.featurizer.vocab["color"] == sorted(COLORS)  # "teal" is in a few late rows only
    assert pre.normalize["fitted_on"] == {"examples": 2, "of": 320, "sampled_with_seed": 4}
    whole = load_data(load_recipe(_recipe(tmp_path, "none")))
    assert whole.preprocessor.normalize["fitted_on"] == {"examples": 320, "of": 320, "sampled_with_seed": 4}
    assert not np.allclose(pre.normalize["mean"], whole.preprocessor.normalize["mean"])


def test_resumed_csv_epoch_reads_the_same_rows(tmp_path):
    from dlcli.data.pipeline import EpochData

    _csv(tmp_path / "d.csv.gz", n=400)
    bundle = load_data(load_recipe(_recipe(tmp_path, "none"), ["data.pipeline.shuffle_buffer=64"]))
    data = EpochData(bundle.train, 16, seed=5, one_hot=2, pipeline=load_recipe(_recipe(tmp_path)).data.pipeline)
    whole = [x for x, _ in data.dataset(1).as_numpy_iterator()]
    tail = [x for x, _ in data.dataset(1, skip=4).as_numpy_iterator()]
    assert len(whole) == data.steps_per_epoch == 20 and len(tail) == 16
    assert all(np.array_equal(a, b) for a, b in zip(whole[4:], tail, strict=True))
    assert not np.array_equal(whole[0], next(data.dataset(2).as_numpy_iterator())[0])


def test_bad_csv_rows_name_the_line(tmp_path):
    path = _csv(tmp_path / "d.csv.gz")
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    lines[100] = "1.0,oops,red,1"  # file line 101: data row 98 after 2 preamble lines + header
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(DataError, match=r"d\.csv\.gz: column 'b', row 98 \(line 101\): 'oops'"):
        load_data(load_recipe(_recipe(tmp_path)))
    lines[100] = "1.0,2.0,red"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with pytest.raises(DataError, match=r"d\.csv\.gz: line 101: 3 fields, expected 4"):
        load_data(load_recipe(_recipe(tmp_path)))


def test_numpy_arrays_are_memory_mapped(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "stored.npz", x=x, y=y)
    np.savez_compressed(tmp_path / "packed.npz", x=x, y=y)
    base = ("name: n\nseed: 1\ndata:\n  source: numpy\n  path: {p}\n{extra}  normalize: standard\n  cache: none\n"
            "  split: {{validation: 0.2, test: 0.0}}\nmodel: {{architecture: mlp, units: [4]}}\n")
    got = {}
    for name, p, extra, mapped in (("npy", "x.npy", "  labels_path: y.npy\n", True),
                                   ("stored", "stored.npz", "", True), ("packed", "packed.npz", "", False)):
        (tmp_path / f"{name}.yaml").write_text(base.format(p=p, extra=extra))
        bundle = load_data(load_recipe(tmp_path / f"{name}.yaml"))
        assert isinstance(bundle.train, RowSplit)
        assert isinstance(bundle.train.rows.array, np.memmap) == mapped, name
        got[name] = bundle.train.x
    assert np.array_equal(got["npy"], got["stored"]) and np.array_equal(got["npy"], got["packed"])
    with zipfile.ZipFile(tmp_path / "stored.npz") as zf:
        assert zf.getinfo("x.npy").compress_type == zipfile.ZIP_STORED


def test_text_folder_and_text_csv_stream(tmp_path):
    words = {"pos": "good great fine lovely", "neg": "bad awful poor grim"}
    rng = np.random.default_rng(0)
    rows = []
    for cls, vocab in words.items():
        for i in range(30):
            text = " ".join(rng.choice(vocab.split(), 5))
            (tmp_path / "txt" / cls).mkdir(parents=True, exist_ok=True)
            (tmp_path / "txt" / cls / f"{i}.txt").write_text(text)
            rows.append([text, cls])
    with open(tmp_path / "t.csv", "w", newline="") as fh:
        csv.writer(fh).writerows([["text", "label"], *rows])
    base = ("name: t\nseed: 1\ndata:\n  source: text\n  path: {p}\n  sequence_length: 6\n  cache: none\n"
            "  fit_samples: 10\n  split: {{validation: 0.2, test: 0.0}}\nmodel: {{architecture: mlp, units: [4]}}\n")
    for p in ("txt", "t.csv"):
        (tmp_path / "t.yaml").write_text(base.format(p=p))
        bundle = load_data(load_recipe(tmp_path / "t.yaml"))
        assert isinstance(bundle.train, RowSplit), p
        vocab = bundle.preprocessor.featurizer.vocabulary
        assert sorted(vocab) == sorted(" ".join(words.values()).split()), p  # every word, not the sample's
        x = bundle.train.x
        assert x.dtype == np.int32 and x.shape == (48, 6)
        assert x[:, :5].min() >= 2 and not x[:, 5].any()  # known words, then padding

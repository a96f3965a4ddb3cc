"""Streamed data: image folders decoded in tf.data, cache choices, split folders, hash
splits, bad files mid-epoch, and per-worker shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dlcli.data import load_data
from dlcli.data.stream import FileSplit
from dlcli.errors import DataError
from dlcli.recipe.loader import load_recipe
from dlcli.train import train


def _png(path: Path, value: int, size: int = 10) -> None:
    import tensorflow as tf

    rng = np.random.default_rng(value)
    img = np.clip(rng.normal(value, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(tf.io.encode_png(img).numpy())


def _folder(root: Path, per_class: int = 24, classes=(("dark", 50), ("light", 200))) -> Path:
    for cls, value in classes:
        for i in range(per_class):
            _png(root / cls / f"{i:03d}.png", value + i)
    return root


RECIPE = """
name: stream
seed: 3
data:
  source: image_folder
  path: {path}
  image_size: [8, 8]
  normalize: {{method: standard, axis: channel}}
  cache: {cache}
  split: {{validation: 0.25, test: 0.0}}
model: {{architecture: cnn, filters: [4], dense: [8]}}
train:
  epochs: 2
  batch_size: 8
  steps_per_execution: 1
  optimizer: {{name: adam, learning_rate: 0.01}}
  callbacks: {{tensorboard: false}}
"""


def _recipe(tmp_path: Path, cache: str = "none", path: str = "img", name: str = "r.yaml", extra: str = "") -> Path:
    p = tmp_path / name
    p.write_text(RECIPE.format(path=path, cache=cache) + extra)
    return p


def test_image_folder_streams_paths_not_pixels(tmp_path):
    _folder(tmp_path / "img")
    bundle = load_data(load_recipe(_recipe(tmp_path)))
    train_split = bundle.splits["train"]
    assert isinstance(train_split, FileSplit) and train_split.cache == "none"
    assert all(k.endswith(".png") for k in train_split.keys)
    assert bundle.sizes == {"train": 36, "validation": 12}
    # the graph decode equals the NumPy preprocessing that predict uses
    pre = bundle.preprocessor
    keys = train_split.keys[:5]
    assert np.array_equal(train_split.x[:5], pre.transform_x(keys))
    # auto: memory within the budget, none above it
    auto = load_data(load_recipe(_recipe(tmp_path, "auto")))
    assert auto.train.cache == "memory"
    tiny = load_data(load_recipe(_recipe(tmp_path, "auto"), ["data.cache_budget_mb=0.001"]))
    assert tiny.train.cache == "none"


def test_normalization_fitted_on_a_bounded_seeded_sample(tmp_path):
    _folder(tmp_path / "img")
    r = load_recipe(_recipe(tmp_path), ["data.fit_samples=10"])
    pre = load_data(r).preprocessor
    assert pre.normalize["fitted_on"] == {"examples": 10, "of": 36, "sampled_with_seed": 3}
    again = load_data(r).preprocessor
    assert again.normalize["mean"] == pre.normalize["mean"]
    full = load_data(load_recipe(_recipe(tmp_path))).preprocessor
    assert full.normalize["fitted_on"]["examples"] == 36
    assert full.normalize["mean"] != pre.normalize["mean"]


def test_split_folders_are_used_as_they_are(tmp_path):
    for split, n in (("train", 10), ("val", 4), ("test", 3)):
        _folder(tmp_path / "img" / split, per_class=n)
    bundle = load_data(load_recipe(_recipe(tmp_path)))
    assert bundle.sizes == {"train": 20, "validation": 8, "test": 6}
    assert all("/val/" in k for k in bundle.splits["validation"].keys)
    assert bundle.preprocessor.labels == ["dark", "light"]


def test_hash_split_keeps_every_example_where_it_was_when_data_is_added(tmp_path):
    _folder(tmp_path / "img", per_class=30)
    r = _recipe(tmp_path, extra="")
    over = ["data.split.method=hash", "data.split.test=0.2"]
    before = load_data(load_recipe(r, over))
    _folder(tmp_path / "img", per_class=45)  # 15 new files per class
    after = load_data(load_recipe(r, over))
    for name in ("train", "validation", "test"):
        old, new = set(before.splits[name].keys), set(after.splits[name].keys)
        assert old <= new, name  # nothing moved out of its split
    assert 0 < len(after.splits["test"]) < len(after.splits["train"])
    other_seed = load_data(load_recipe(r, [*over, "seed=4"]))
    assert set(other_seed.splits["test"].keys) != set(after.splits["test"].keys)


def _weights(run: Path) -> str:
    return json.loads((run / "env.json").read_text())["weights_sha256"]


@pytest.mark.slow  # quick tier under 10 min: heavier cases run in make test-slow
def test_cache_choice_changes_nothing_but_speed(tmp_path):
    """none, memory and disk read the same examples in the same order: equal weights."""
    _folder(tmp_path / "img")
    digests = {}
    for cache in ("none", "memory", "disk"):
        run = tmp_path / f"run-{cache}"
        res = train(load_recipe(_recipe(tmp_path, cache)), run, progress="none", pipeline=False)
        assert res.metrics["validation"]["accuracy"] >= 0.75
        digests[cache] = _weights(run)
        assert not (run / "data-cache").exists()  # dlcli's own cache file, removed at the end
    assert len(set(digests.values())) == 1, digests


def test_resumed_epoch_sees_the_same_batches_and_draws(tmp_path):
    from dlcli.data.pipeline import EpochData, build_augmenter
    from dlcli.recipe.data import AugmentSpec

    _folder(tmp_path / "img")
    bundle = load_data(load_recipe(_recipe(tmp_path)))
    aug = AugmentSpec(flip="horizontal", noise=0.1)
    data = EpochData(bundle.train, 8, seed=5, one_hot=2,
                     make_augment=lambda s: build_augmenter(aug, (8, 8, 3), (-2.0, 2.0), s))
    whole = [x for x, _ in data.dataset(1).as_numpy_iterator()]
    tail = [x for x, _ in data.dataset(1, skip=2).as_numpy_iterator()]
    assert len(whole) == 5 and len(tail) == 3
    assert all(np.array_equal(a, b) for a, b in zip(whole[2:], tail, strict=True))
    other = [x for x, _ in data.dataset(2).as_numpy_iterator()]
    assert not np.array_equal(whole[0], other[0])


def test_undecodable_image_mid_epoch_names_the_file(tmp_path, cli):
    _folder(tmp_path / "img")
    bad = tmp_path / "img" / "light" / "017.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 4)
    run = tmp_path / "run"
    r = cli("train", _recipe(tmp_path), "--run-dir", run)
    assert r.exit_code == 3, r.stderr
    assert str(bad) in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (run / "model.keras").exists()


def test_missing_file_mid_epoch_names_it(tmp_path):
    _folder(tmp_path / "img")
    bundle = load_data(load_recipe(_recipe(tmp_path)))
    gone = Path(bundle.train.keys[3])
    gone.unlink()
    bad = bundle.train.find_unreadable()
    assert bad is not None and bad[0] == str(gone)


def test_evaluate_and_predict_a_streamed_run(tmp_path, cli):
    _folder(tmp_path / "img")
    run = tmp_path / "run"
    res = train(load_recipe(_recipe(tmp_path)), run, progress="none", pipeline=False)
    r = cli("evaluate", run, "--split", "validation", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["examples"] == 12
    assert out["metrics"]["accuracy"] == pytest.approx(res.metrics["validation"]["accuracy"], abs=1e-6)


def test_bad_split_layout_and_empty_folder_are_data_errors(tmp_path):
    (tmp_path / "img" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="no class subfolders"):
        load_data(load_recipe(_recipe(tmp_path)))


def test_a_moved_checkout_still_evaluates_and_resumes(tmp_path, cli):
    """Run directories record data paths relative to themselves."""
    import shutil

    proj = tmp_path / "proj"
    _folder(proj / "img", per_class=12)
    recipe = _recipe(proj)
    assert cli("train", recipe, "--run-dir", proj / "runs" / "a", "--quiet").exit_code == 0
    saved = (proj / "runs" / "a" / "recipe.yaml").read_text()
    assert "path: ../../img\n" in saved and str(proj) not in saved
    moved = tmp_path / "elsewhere"
    shutil.move(str(proj), str(moved))
    r = cli("evaluate", moved / "runs" / "a", "--split", "validation", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["data_changed"] is False
    env_path = moved / "runs" / "a" / "env.json"
    env = json.loads(env_path.read_text())
    env_path.write_text(json.dumps({**env, "status": "interrupted"}))  # as if stopped after its last epoch
    r = cli("train", moved / "r.yaml", "--run-dir", moved / "runs" / "a", "--resume", "--quiet")
    assert r.exit_code == 0, r.stderr


# ---------------------------------------------------------------- tfrecord shards
def _shards(root: Path, shards: int = 4, per: int = 40, gzip: bool = True) -> list[Path]:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    paths = []
    for s in range(shards):
        path = root / f"part-{s:02d}.tfrecord{'.gz' if gzip else ''}"
        opts = tf.io.TFRecordOptions(compression_type="GZIP") if gzip else None
        with tf.io.TFRecordWriter(str(path), options=opts) as w:
            for _ in range(per):
                k = int(rng.integers(0, 3))
                x = (rng.normal(size=6) + 2.0 * k).astype(np.float32)
                feat = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=x)),
                        "label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f"c{k}".encode()]))}
                w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
        paths.append(path)
    return paths


TFRECORD_RECIPE = """
name: shards
seed: 5
data:
  source: tfrecord
  path: "part-*.tfrecord.gz"
  compression: gzip
  features: {x: {dtype: float32, shape: [6]}, label: {dtype: string}}
  inputs: [x]
  label: label
  normalize: standard
  split: {validation: 0.2, test: 0.2, method: hash}
  pipeline: {shuffle_buffer: 32}
model: {architecture: mlp, units: [16]}
train:
  epochs: 3
  batch_size: 16
  optimizer: {name: adam, learning_rate: 0.02}
  callbacks: {tensorboard: false}
"""


def test_tfrecord_shards_stream_and_train(tmp_path):
    from dlcli.data.records import RecordSplit

    _shards(tmp_path)
    (tmp_path / "r.yaml").write_text(TFRECORD_RECIPE)
    recipe = load_recipe(tmp_path / "r.yaml")
    bundle = load_data(recipe)
    assert all(isinstance(s, RecordSplit) for s in bundle.splits.values())
    assert sum(bundle.sizes.values()) == 160 and bundle.preprocessor.labels == ["c0", "c1", "c2"]
    # the graph parse + normalization equals the NumPy path used by export and predict
    from dlcli.data import raw_inputs, read_raw_splits

    raws, _ = read_raw_splits(recipe.data, tmp_path, recipe.seed, recipe.task)
    expected = bundle.preprocessor.transform_x(raw_inputs(recipe.data, raws["test"]))
    np.testing.assert_allclose(bundle.splits["test"].x, expected, rtol=1e-6)
    np.testing.assert_array_equal([y for _, y in bundle.splits["test"].dataset(8).unbatch().as_numpy_iterator()],
                                  bundle.splits["test"].y)
    res = train(recipe, tmp_path / "run", progress="none", pipeline=False)
    assert res.metrics["test"]["accuracy"] >= 0.8
    again = train(recipe, tmp_path / "run2", progress="none", pipeline=False)
    assert again.weights_digest == res.weights_digest  # per-(seed, epoch) order: reproducible


def test_tfrecord_epoch_resumes_mid_way_on_the_same_records(tmp_path):
    from dlcli.data.pipeline import EpochData

    _shards(tmp_path)
    (tmp_path / "r.yaml").write_text(TFRECORD_RECIPE)
    bundle = load_data(load_recipe(tmp_path / "r.yaml"))
    data = EpochData(bundle.train, 16, seed=5, one_hot=3)
    whole = [x for x, _ in data.dataset(2).as_numpy_iterator()]
    tail = [x for x, _ in data.dataset(2, skip=3).as_numpy_iterator()]
    assert len(whole) == data.steps_per_epoch and len(tail) == len(whole) - 3
    assert all(np.array_equal(a, b) for a, b in zip(whole[3:], tail, strict=True))
    assert not np.array_equal(whole[0], next(data.dataset(3).as_numpy_iterator())[0])


def test_bad_and_truncated_shards_name_the_file(tmp_path):
    shards = _shards(tmp_path, gzip=False)
    (tmp_path / "r.yaml").write_text(TFRECORD_RECIPE.replace('.tfrecord.gz"', '.tfrecord"')
                                     .replace("compression: gzip", "compression: none"))
    good = shards[2].read_bytes()
    shards[2].write_bytes(good[: len(good) - 7])  # truncated mid-record
    with pytest.raises(DataError, match="part-02.tfrecord"):
        load_data(load_recipe(tmp_path / "r.yaml"))
    shards[2].write_bytes(b"this is not a TFRecord file at all" * 3)
    with pytest.raises(DataError, match="part-02.tfrecord"):
        load_data(load_recipe(tmp_path / "r.yaml"))


@pytest.mark.slow
def test_sigkill_mid_epoch_on_a_streamed_folder_resumes_to_equal_weights(tmp_path):
    """Decoding, augmentation draws and dropout after a resume are those of an uninterrupted run."""
    import subprocess
    import sys

    from conftest import sigkill_after_mid_epoch_checkpoint

    _folder(tmp_path / "img", per_class=300)
    recipe = _recipe(tmp_path, "none").read_text().replace("batch_size: 8", "batch_size: 4")
    recipe = recipe.replace("epochs: 2", "epochs: 3").replace(
        "callbacks: {tensorboard: false}", "callbacks: {tensorboard: false, checkpoint: {min_interval_seconds: 0.2}}")
    recipe = recipe.replace("  cache: none\n", "  cache: none\n  augment: {flip: horizontal, noise: 0.05}\n")
    recipe = recipe.replace("dense: [8]}", "dense: [8], dropout: 0.2}")
    (tmp_path / "r.yaml").write_text(recipe)

    def cmd(run):
        return [sys.executable, "-m", "dlcli", "train", str(tmp_path / "r.yaml"), "--run-dir", str(run), "--json", "--quiet"]

    ref = subprocess.run(cmd(tmp_path / "ref"), capture_output=True, text=True, timeout=300, check=False)
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    sigkill_after_mid_epoch_checkpoint(cmd(run), run, poll=0.02)
    again = subprocess.run(cmd(run), capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["weights_sha256"] == json.loads(ref.stdout)["weights_sha256"]

"""Data: read a source, split it, fit preprocessing on the training split only.

``load_data(recipe) -> DataBundle`` holds one split object per split (in memory:
:class:`~dlcli.data.stream.ArraySplit`; streamed from disk: image folders as
:class:`~dlcli.data.stream.FileSplit`, TFRecord shards as
:class:`~dlcli.data.records.RecordSplit`), the fitted :class:`Preprocessor`, the data's
sha256 fingerprint and what the model needs to know (shapes, classes). The trainer's
:class:`~dlcli.data.pipeline.EpochData` turns the training split into per-epoch tf.data
pipelines; ``split.dataset(batch)`` gives evaluation batches.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.data import sources
from dlcli.data.preprocess import Preprocessor
from dlcli.data.stream import ArraySplit, FileSplit, choose_cache
from dlcli.errors import DataError

SPLITS = ("train", "validation", "test")


Split = ArraySplit  # the in-memory split (kept under its old name)


@dataclass
class DataBundle:
    splits: dict[str, ArraySplit | FileSplit]
    preprocessor: Preprocessor
    fingerprint: str
    class_weight: dict[int, float] | None = None
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def streamed(self) -> bool:
        return any(s.streamed for s in self.splits.values())

    def set_cache_dir(self, folder: Path) -> None:
        """Where ``data.cache: disk`` writes its cache files (the run directory)."""
        for name, split in self.splits.items():
            if isinstance(split, FileSplit):
                split.cache_file = str(Path(folder) / "data-cache" / f"{name}-{self.fingerprint[:12]}")

    @property
    def train(self) -> ArraySplit | FileSplit:
        return self.splits["train"]

    @property
    def num_classes(self) -> int:
        return len(self.preprocessor.labels or [])

    def output_shape(self) -> tuple[int, ...]:
        if self.preprocessor.task == "reconstruction":
            return tuple(self.preprocessor.input_shape)
        return tuple(self.train.y.shape[1:])


def resolve(base_dir: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else (base_dir / path)


def fingerprint_files(files: list[Path], extra: dict[str, Any] | None = None) -> str:
    from dlcli.atomic import hash_chunks

    h = hashlib.sha256()
    paths = sorted({Path(f).absolute() for f in files})
    # names relative to the common folder: moving a file to another class folder changes the hash
    root = Path(os.path.commonpath([str(f.parent) for f in paths])) if paths else None
    for f in paths:
        h.update(f.relative_to(root).as_posix().encode())
        with open(f, "rb") as fh:
            hash_chunks(h, fh)
    if extra:
        h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    return h.hexdigest()


def _split_indices(n: int, y: np.ndarray | None, fractions: dict[str, float], seed: int, stratify: bool):
    rng = np.random.default_rng(seed)
    out: dict[str, list[int]] = {k: [] for k in ("train", *fractions)}
    groups = [np.arange(n)]
    if stratify and y is not None:
        keys = np.asarray([str(v) for v in y])
        groups = [np.flatnonzero(keys == k) for k in sorted(set(keys))]
    for g in groups:
        g = rng.permutation(g)
        start = 0
        for name, frac in fractions.items():
            take = round(len(g) * frac)
            out[name] += g[start : start + take].tolist()
            start += take
        out["train"] += g[start:].tolist()
    return {k: np.asarray(sorted(v), dtype=np.int64) for k, v in out.items()}


_SPLIT_FOLDERS = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}


def split_folders(spec, path: Path) -> dict[str, Path] | None:
    """``path/train``, ``path/validation`` (or ``val``), ``path/test``, when the folder
    sources' data is laid out in split folders (and nothing else sits beside them)."""
    if spec.source not in ("image_folder", "text") or not path.is_dir() or not (path / "train").is_dir():
        return None
    subs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if any(p.name not in _SPLIT_FOLDERS for p in subs):
        return None
    return {_SPLIT_FOLDERS[p.name]: p for p in subs}


def _hash_fraction(key: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).hexdigest()
    return int(digest[:13], 16) / 16**13


def example_keys(raw: sources.Raw, root: Path) -> list[str]:
    """A stable key per example: its file path relative to the data root, a TFRecord's shard
    name and record number in it, else its row number."""
    if raw.index is not None:
        return raw.index.keys(np.asarray(raw.x), root)
    if len(raw.files) == len(raw) and raw.files:  # one file per example (image folders)
        return [Path(f).relative_to(root).as_posix() if Path(f).is_relative_to(root) else str(f) for f in raw.files]
    return [str(i) for i in range(len(raw))]


def _hash_split(raw: sources.Raw, root: Path, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    bounds, start = {}, 0.0
    for name, frac in fractions.items():
        bounds[name] = (start, start + frac)
        start += frac
    out: dict[str, list[int]] = {k: [] for k in ("train", *fractions)}
    for i, key in enumerate(example_keys(raw, root)):
        u = _hash_fraction(key, seed)
        name = next((n for n, (lo, hi) in bounds.items() if lo <= u < hi), "train")
        out[name].append(i)
    return {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}


def keep_normal(recipe, raws: dict) -> dict:
    """``anomaly.normal_classes``: the training and validation splits keep the examples of
    those labels only (an anomaly detector learns what normal looks like); test keeps all."""
    anomaly = getattr(recipe, "anomaly", None)
    if anomaly is None or not anomaly.normal_classes:
        return raws
    normal = {str(c) for c in anomaly.normal_classes}
    for name in ("train", "validation"):
        raw = raws.get(name)
        if raw is None:
            continue
        if raw.y is None:
            raise DataError("anomaly.normal_classes: the data has no labels to pick the normal examples by "
                            "(set data.label_column)")
        keep = np.fromiter((str(v) in normal for v in raw.y), bool, len(raw.y))
        if not keep.any():
            seen = sorted({str(v) for v in raw.y})
            raise DataError(f"anomaly.normal_classes {sorted(normal)}: no {name} example has one of these labels "
                            f"(labels: {', '.join(seen[:20])})")
        raws[name] = raw.take(np.flatnonzero(keep))
    return raws


def data_task(recipe) -> str:
    """What the data's labels are for ``recipe``: a GAN's labels are class ids (for the judge
    and conditional GANs), read like a classifier's."""
    return "classification" if recipe.task == "gan" else recipe.task


def read_raw_splits(spec, base_dir: Path, seed: int, task: str) -> tuple[dict[str, sources.Raw], list[Path]]:
    """Raw records per split: split folders or separate files where given, else a seeded
    fraction split (random, or by a stable hash of each example's key)."""
    root = resolve(base_dir, spec.path)
    folders = split_folders(spec, root) or {"train": root}
    main = sources.read(spec, folders["train"], seed=seed)
    if len(main) == 0:
        raise DataError(f"{folders['train']}: the data set is empty")
    raws = {"train": main}
    files = list(main.files)
    fractions = {}
    for name, path_attr, frac in (("validation", spec.validation_path, spec.split.validation),
                                  ("test", spec.test_path, spec.split.test)):
        where = resolve(base_dir, path_attr) if path_attr else folders.get(name)
        if where is not None:
            raws[name] = sources.read(spec, where, seed=seed + 1)
            if len(raws[name]) == 0:
                raise DataError(f"{where}: the {name} data set is empty")
            files += raws[name].files
        elif frac > 0 and len(folders) == 1:
            fractions[name] = frac
    if fractions:
        if spec.split.method == "hash":
            idx = _hash_split(main, folders["train"], fractions, seed)
        else:
            stratify = spec.split.stratify and task == "classification"
            idx = _split_indices(len(main), main.y, fractions, seed, stratify)
        for name, ix in idx.items():
            raws[name] = main.take(ix)
    for name, raw in raws.items():
        if len(raw) == 0:
            raise DataError(
                f"data: the {name} split is empty ({len(main)} examples in {spec.path}; "
                f"raise data.split.{name} or add data)" if name != "train" else
                f"data: the training split is empty ({len(main)} examples in {spec.path}; "
                f"lower data.split.validation / data.split.test or add data)"
            )
    return raws, files


def _new_preprocessor(recipe, train: sources.Raw) -> Preprocessor:
    spec = recipe.data
    if spec.source == "csv" and spec.inputs is not None:
        from dlcli.data.inputs import MultiPreprocessor

        return MultiPreprocessor.from_spec(spec, data_task(recipe), str(train.files[0]))
    return Preprocessor(sources.make_featurizer(spec, train), spec.reshape, spec.normalize.model_dump(), data_task(recipe))


def _fit_preprocessor(recipe, train: sources.Raw) -> Preprocessor:
    """Fitted on the training split; a streamed source's normalization on a seeded sample of
    at most ``data.fit_samples`` examples (recorded in preprocessing.json). Vocabularies and
    category lists of row sources come from one streaming pass over the whole split."""
    spec = recipe.data
    pre = _new_preprocessor(recipe, train)
    if not sources.streamed(spec):
        return pre.fit(train.x, train.y, train.class_names, spec.label_names)
    sample = train
    if len(train) > spec.fit_samples:
        pick = np.sort(np.random.default_rng(recipe.seed).choice(len(train), spec.fit_samples, replace=False))
        sample = train.take(pick)
    if spec.source in sources.ROWS:
        if len(sample) < len(train):
            pre.fit_featurizer(train.index.chunks(np.asarray(train.x)))
        pre.fit(raw_inputs(spec, sample), train.y, train.class_names, spec.label_names,
                featurizer_fitted=len(sample) < len(train))
    else:
        pre.fit_chunks(_fit_chunks(spec, pre, sample), train.y, train.class_names, spec.label_names)
    pre.normalize["fitted_on"] = {"examples": len(sample), "of": len(train), "sampled_with_seed": recipe.seed}
    return pre


_FIT_CHUNK = 256  # decoded examples in memory at once while fitting a streamed source


def _fit_chunks(spec, pre: Preprocessor, sample: sources.Raw):
    """The fit sample, ``_FIT_CHUNK`` featurized examples at a time: images decoded in
    tf.data (parallel); a file that fails is named by the featurizer's own error."""
    if spec.source != "image_folder":
        inputs = raw_inputs(spec, sample)  # the records' declared inputs (small)
        yield from (pre.featurizer.transform(inputs[i:i + _FIT_CHUNK]) for i in range(0, len(inputs), _FIT_CHUNK))
        return
    import tensorflow as tf

    paths = list(sample.x)
    ds = tf.data.Dataset.from_tensor_slices(paths).map(pre.featurizer.tf_decode, num_parallel_calls=tf.data.AUTOTUNE,
                                                       deterministic=True).batch(_FIT_CHUNK)
    try:
        yield from ds.as_numpy_iterator()
    except tf.errors.OpError:
        pre.featurizer.transform(paths)  # raises DataError naming the file
        raise


def raw_inputs(spec, raw: sources.Raw):
    """What the featurizer reads: the records themselves (generated data), the listed rows
    of a row source, or for TFRecord shards the declared inputs of the listed records."""
    if raw.index is None:
        return raw.x
    if spec.source in sources.ROWS:
        return raw.index.read(np.asarray(raw.x))
    from dlcli.data import records

    return records.sample_x(spec, raw.index, raw.x)


def _streamed_common(recipe, pre: Preprocessor, raw: sources.Raw, name: str):
    """A streamed split's encoded labels (placeholders when the target is the input), the
    example shape, and the resolved ``data.cache``."""
    y = np.zeros(len(raw), np.float32) if data_task(recipe) == "reconstruction" else pre.encode_y(raw.y, name)
    shapes = pre.input_shape if isinstance(pre.input_shape, dict) else {"x": pre.input_shape}
    values = sum(int(np.prod(s)) for s in shapes.values())
    shape = tuple(pre.input_shape) if not isinstance(pre.input_shape, dict) else ()
    return y, shape, choose_cache(recipe.data.cache, len(raw), (values,), recipe.data.cache_budget_mb)


def _row_split(recipe, pre: Preprocessor, raw: sources.Raw, name: str, value_range):
    """A row source's split: featurized once into memory when ``data.cache`` says so (the
    fast path for small data), else streamed from the file every epoch."""
    from dlcli.data import rows as rowsrc

    y, _, cache = _streamed_common(recipe, pre, raw, name)
    members = np.asarray(raw.x, np.int64)
    if cache == "memory":
        from dlcli.data.inputs import concat_rows

        x = concat_rows([pre.transform_x(c) for c in raw.index.chunks(members)])
        return _checked_array_split(x, x if data_task(recipe) == "reconstruction" else y, name)
    if data_task(recipe) == "reconstruction" and isinstance(pre.input_shape, dict):
        raise DataError("task reconstruction needs a single input, not data.inputs")
    return rowsrc.RowSplit(raw.index, members, y, pre.transform_x, _signature(pre),
                           sample_range=value_range or (0.0, 1.0), reconstruct=data_task(recipe) == "reconstruction")


def _signature(pre: Preprocessor):
    """The ``tf.TensorSpec`` of one example's model input (a dict of them for named inputs)."""
    import tensorflow as tf

    if isinstance(pre.input_shape, dict):
        return {n: tf.TensorSpec(tuple(s), tf.as_dtype(pre.input_dtype[n])) for n, s in pre.input_shape.items()}
    return tf.TensorSpec(tuple(pre.input_shape), tf.as_dtype(pre.input_dtype))


def _record_split(recipe, pre: Preprocessor, raw: sources.Raw, name: str, value_range):
    from dlcli.data import records

    spec, task = recipe.data, data_task(recipe)
    y, shape, cache = _streamed_common(recipe, pre, raw, name)
    return records.RecordSplit(raw.index, np.asarray(raw.x), y, records.make_element(spec, pre, task), shape,
                               records.compression(spec), buffer=spec.pipeline.shuffle_buffer,
                               sample_range=value_range, cache="memory" if cache == "memory" else "none")


def _array_split(pre: Preprocessor, raw: sources.Raw, name: str, task: str) -> ArraySplit:
    x = pre.transform_x(raw.x)
    return _checked_array_split(x, x if task == "reconstruction" else pre.encode_y(raw.y, name), name)


def _checked_array_split(x, y, name: str) -> ArraySplit:
    from dlcli.data.inputs import num_rows

    if isinstance(y, dict):
        raise DataError("task reconstruction needs a single input, not data.inputs")
    if y.ndim == 0 or len(y) != num_rows(x):
        raise DataError(f"data: the {name} split has {num_rows(x)} examples but {len(y)} labels")
    return ArraySplit(x, y)


def _file_split(recipe, pre: Preprocessor, raw: sources.Raw, name: str, value_range) -> FileSplit:
    task = data_task(recipe)
    featurizer = pre.featurizer

    def decode(key):
        return pre.tf_example(featurizer.tf_decode(key))

    y, shape, cache = _streamed_common(recipe, pre, raw, name)
    return FileSplit(list(raw.x), y, decode, shape, cache=cache, sample_range=value_range,
                     reconstruct=task == "reconstruction")


def load_data(recipe, base_dir: Path | None = None, preprocessor: Preprocessor | None = None) -> DataBundle:
    """Every split through preprocessing fitted on the training split, or through
    ``preprocessor`` (already fitted: a compression stage reuses its source run's).
    Every file source streams: its splits hold file paths, record or row numbers, decoded in
    tf.data (or, where ``data.cache`` says memory, featurized once into memory)."""
    spec = recipe.data
    base = Path(base_dir if base_dir is not None else (recipe._base_dir or "."))
    raws, files = read_raw_splits(spec, base, recipe.seed, data_task(recipe))
    raws = keep_normal(recipe, raws)
    pre = preprocessor or _fit_preprocessor(recipe, raws["train"])
    splits: dict[str, ArraySplit | FileSplit] = {}
    value_range = pre.fit_range
    if sources.streamed(spec) and value_range is None and not isinstance(pre.input_shape, dict):
        # a reused preprocessor: probe a few examples
        probe = pre.transform_x(raw_inputs(spec, raws["train"].take(np.arange(min(len(raws["train"]), 64)))))
        value_range = (float(probe.min()), float(probe.max()))
    make = {"image_folder": _file_split, "tfrecord": _record_split}.get(spec.source)
    if spec.source in sources.ROWS:
        make = _row_split
    for name in SPLITS:
        if name in raws:
            splits[name] = (make(recipe, pre, raws[name], name, value_range) if make is not None
                            else _array_split(pre, raws[name], name, data_task(recipe)))
    extra = {"source": spec.source, "seed": recipe.seed} if spec.source == "synthetic" else None
    if spec.source == "synthetic":
        extra["spec"] = spec.model_dump(mode="json")
    fp = fingerprint_files(files, extra)
    bundle = DataBundle(splits, pre, fp, sizes={k: len(v) for k, v in splits.items()})
    bundle.class_weight = _class_weight(spec.class_weight, splits["train"].y, bundle.num_classes, data_task(recipe))
    return bundle


def _class_weight(setting, y: np.ndarray, k: int, task: str) -> dict[int, float] | None:
    if setting == "none" or task != "classification":
        return None
    if isinstance(setting, dict):
        bad = [c for c in setting if not 0 <= int(c) < k]
        if bad:
            raise DataError(f"data.class_weight: classes {bad} are out of range 0..{k - 1}")
        return {int(c): float(w) for c, w in setting.items()}
    counts = np.bincount(y.astype(np.int64), minlength=k).astype(np.float64)
    present = counts > 0
    weights = np.where(present, len(y) / (present.sum() * np.maximum(counts, 1)), 0.0)
    return {i: float(w) for i, w in enumerate(weights)}

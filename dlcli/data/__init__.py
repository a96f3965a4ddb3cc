"""Data: read a source, split it, fit preprocessing on the training split only.

``load_data(recipe) -> DataBundle`` holds NumPy arrays per split, the fitted
:class:`Preprocessor`, the data's sha256 fingerprint and what the model needs to
know (shapes, classes). ``make_dataset`` (in :mod:`dlcli.data.pipeline`) turns a
split into a tf.data pipeline.
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
from dlcli.errors import DataError

SPLITS = ("train", "validation", "test")


@dataclass
class Split:
    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.x)


@dataclass
class DataBundle:
    splits: dict[str, Split]
    preprocessor: Preprocessor
    fingerprint: str
    class_weight: dict[int, float] | None = None
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def train(self) -> Split:
        return self.splits["train"]

    @property
    def num_classes(self) -> int:
        return len(self.preprocessor.labels or [])

    def output_shape(self) -> tuple[int, ...]:
        y = self.train.y
        return tuple(y.shape[1:])


def resolve(base_dir: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else (base_dir / path)


def fingerprint_files(files: list[Path], extra: dict[str, Any] | None = None) -> str:
    h = hashlib.sha256()
    paths = sorted({Path(f).absolute() for f in files})
    # names relative to the common folder: moving a file to another class folder changes the hash
    root = Path(os.path.commonpath([str(f.parent) for f in paths])) if paths else None
    for f in paths:
        h.update(f.relative_to(root).as_posix().encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
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
            take = int(round(len(g) * frac))
            out[name] += g[start : start + take].tolist()
            start += take
        out["train"] += g[start:].tolist()
    return {k: np.asarray(sorted(v), dtype=np.int64) for k, v in out.items()}


def read_raw_splits(spec, base_dir: Path, seed: int, task: str) -> tuple[dict[str, sources.Raw], list[Path]]:
    """Raw records per split: separate files where given, else a seeded fraction split."""
    main = sources.read(spec, resolve(base_dir, spec.path), seed=seed)
    if len(main) == 0:
        raise DataError(f"{resolve(base_dir, spec.path)}: the data set is empty")
    raws = {"train": main}
    files = list(main.files)
    fractions = {}
    for name, path_attr, frac in (("validation", spec.validation_path, spec.split.validation),
                                  ("test", spec.test_path, spec.split.test)):
        if path_attr:
            raws[name] = sources.read(spec, resolve(base_dir, path_attr), seed=seed + 1)
            if len(raws[name]) == 0:
                raise DataError(f"{resolve(base_dir, path_attr)}: the {name} data set is empty")
            files += raws[name].files
        elif frac > 0:
            fractions[name] = frac
    if fractions:
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


def load_data(recipe, base_dir: Path | None = None, preprocessor: Preprocessor | None = None) -> DataBundle:
    """Every split through preprocessing fitted on the training split, or through
    ``preprocessor`` (already fitted: a compression stage reuses its source run's)."""
    spec = recipe.data
    base = Path(base_dir if base_dir is not None else (recipe._base_dir or "."))
    raws, files = read_raw_splits(spec, base, recipe.seed, recipe.task)
    train = raws["train"]
    pre = preprocessor
    if pre is None:
        featurizer = sources.make_featurizer(spec, train)
        pre = Preprocessor(featurizer, spec.reshape, spec.normalize.model_dump(), recipe.task)
        pre.fit(train.x, train.y, train.class_names, spec.label_names)
    splits: dict[str, Split] = {}
    for name in SPLITS:
        if name not in raws:
            continue
        raw = raws[name]
        x = pre.transform_x(raw.x)
        if recipe.task == "reconstruction":
            y = x.copy()
        else:
            y = pre.encode_y(raw.y, name)
        if y.ndim == 0 or len(y) != len(x):
            raise DataError(f"data: the {name} split has {len(x)} examples but {len(y)} labels")
        splits[name] = Split(x, y)
    extra = {"source": spec.source, "seed": recipe.seed} if spec.source == "synthetic" else None
    if spec.source == "synthetic":
        extra["spec"] = spec.model_dump(mode="json")
    fp = fingerprint_files(files, extra)
    bundle = DataBundle(splits, pre, fp, sizes={k: len(v) for k, v in splits.items()})
    bundle.class_weight = _class_weight(spec.class_weight, splits["train"].y, bundle.num_classes, recipe.task)
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

"""Readers, one per ``data.source``: each returns raw records and labels.

``read(spec, path) -> Raw``; a registry maps the source name to its reader and
featurizer factory. Readers check that files exist and are well formed, and
raise :class:`DataError` naming the file (and row or column) otherwise.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.data.featurize import Featurizer, ImageFeaturizer, TabularFeaturizer, TextFeaturizer, _is_float
from dlcli.errors import DataError


@dataclass
class Raw:
    """Raw records of one file: ``x`` indexable by row lists via :func:`take`."""

    x: Any  # np.ndarray | dict[str, list[str]] | list[str]
    y: np.ndarray | None
    files: list[Path]
    class_names: list[str] | None = None  # folder sources know their classes
    index: Any = None  # tfrecord: the RecordIndex that ``x`` (global record numbers) points into

    def __len__(self) -> int:
        if isinstance(self.x, dict):
            return len(next(iter(self.x.values()))) if self.x else 0
        return len(self.x)

    def take(self, idx: np.ndarray) -> Raw:
        if isinstance(self.x, dict):
            x = {k: [v[i] for i in idx] for k, v in self.x.items()}
        elif isinstance(self.x, list):
            x = [self.x[i] for i in idx]
        else:
            x = self.x[idx]
        return Raw(x, None if self.y is None else self.y[idx], self.files, self.class_names, self.index)


_READERS: dict[str, Callable[..., Raw]] = {}
_FEATURIZERS: dict[str, Callable[..., Featurizer]] = {}


def register_source(name: str, featurizer: Callable[..., Featurizer] | None = None):
    def deco(fn):
        _READERS[name] = fn
        _FEATURIZERS[name] = featurizer or (lambda spec, raw: Featurizer())
        return fn

    return deco


STREAMED = frozenset({"image_folder", "tfrecord"})


def streamed(spec) -> bool:
    """Whether the source's splits stream from files (decoded in tf.data) instead of memory."""
    return spec.source in STREAMED


def read(spec, path: Path, seed: int = 0) -> Raw:
    return _READERS[spec.source](spec, path, seed=seed)


def make_featurizer(spec, raw: Raw) -> Featurizer:
    return _FEATURIZERS[spec.source](spec, raw)


def _require(path: Path, kind: str = "file") -> Path:
    if not path.exists():
        raise DataError(f"{path}: data {kind} not found")
    if kind == "file" and path.is_dir():
        raise DataError(f"{path}: is a folder, expected a file")
    if kind == "folder" and not path.is_dir():
        raise DataError(f"{path}: expected a folder with one subfolder per class")
    return path


# ---------------------------------------------------------------- csv
def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def read_csv_columns(path: Path, header: bool, delimiter: str) -> dict[str, list[str]]:
    _require(path)
    try:
        with _open_text(path) as fh:
            rows = [r for r in csv.reader(fh, delimiter=delimiter) if r]
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as exc:
        raise DataError(f"{path}: cannot read CSV: {exc}") from None
    if not rows:
        raise DataError(f"{path}: the file is empty")
    names = [c.strip() for c in rows[0]] if header else [str(i) for i in range(len(rows[0]))]
    body = rows[1:] if header else rows
    if not body:
        raise DataError(f"{path}: no data rows")
    for n, row in enumerate(body):
        if len(row) != len(names):
            line = n + (2 if header else 1)
            raise DataError(f"{path}: line {line}: {len(row)} fields, expected {len(names)}")
    return {name: [row[i].strip() for row in body] for i, name in enumerate(names)}


def _col(name: str | int, header: bool) -> str:
    return str(name)


def _csv_featurizer(spec, raw: Raw) -> Featurizer:
    if spec.inputs is not None:
        return Featurizer()  # unused: every input has its own (dlcli.data.inputs)
    cols = list(raw.x)
    cat = [_col(c, spec.header) for c in spec.categorical_columns]
    return TabularFeaturizer(cols, cat, str(raw.files[0]))


@register_source("csv", _csv_featurizer)
def read_csv(spec, path: Path, seed: int = 0) -> Raw:
    columns = read_csv_columns(path, spec.header, spec.delimiter)
    label = _col(spec.label_column, spec.header)
    if isinstance(spec.label_column, int) and -len(columns) <= spec.label_column < 0:
        label = list(columns)[spec.label_column]
    if label not in columns:
        raise DataError(f"{path}: label column {label!r} not found (columns: {', '.join(list(columns)[:12])}...)")
    y = np.asarray(columns.pop(label), dtype=object)
    if spec.inputs is not None:
        return Raw(_input_columns(spec, path, columns), y, [path])
    if spec.feature_columns is not None:
        wanted = [_col(c, spec.header) for c in spec.feature_columns]
        missing = [c for c in wanted if c not in columns]
        if missing:
            raise DataError(f"{path}: feature column(s) not found: {', '.join(missing)}")
        columns = {c: columns[c] for c in wanted}
    for c in spec.categorical_columns:
        if _col(c, spec.header) not in columns:
            raise DataError(f"{path}: categorical column {c!r} not found among the features")
    categorical = {_col(c, spec.header) for c in spec.categorical_columns}
    for c, values in columns.items():
        if c not in categorical:
            _check_numeric(path, c, values, spec.header)
    return Raw(columns, y, [path])


def _input_columns(spec, path: Path, columns: dict[str, list[str]]) -> dict[str, list[str]]:
    """The columns named by ``data.inputs`` (each checked: present, numeric where it must be)."""
    used: dict[str, list[str]] = {}
    for name, inp in spec.inputs.items():
        for c in (_col(c, spec.header) for c in inp.columns):
            if c not in columns:
                raise DataError(f"{path}: data.inputs.{name}: column {c!r} not found "
                                f"(columns: {', '.join(list(columns)[:12])}{'...' if len(columns) > 12 else ''})")
            if inp.type == "numeric":
                _check_numeric(path, c, columns[c], spec.header)
            used[c] = columns[c]
    return used


def _check_numeric(path: Path, col: str, values: list[str], header: bool) -> None:
    """Before the split, so the error names the row of the file (not of a split)."""
    try:
        np.asarray(values, dtype=np.float32)
    except ValueError:
        bad = next(i for i, v in enumerate(values) if not _is_float(v))
        raise DataError(
            f"{path}: column {col!r}, row {bad + 1} (line {bad + (2 if header else 1)}): {values[bad]!r} "
            "is not a number (list it in data.categorical_columns to one-hot encode it)"
        ) from None


# ---------------------------------------------------------------- numpy
@register_source("numpy")
def read_numpy(spec, path: Path, seed: int = 0) -> Raw:
    _require(path)
    files = [path]
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if spec.x_key not in z:
                    raise DataError(f"{path}: no array {spec.x_key!r} (has: {', '.join(z.files)})")
                x = z[spec.x_key]
                y = z[spec.y_key] if spec.y_key in z else None
        else:
            x = np.load(path, allow_pickle=False)
            y = None
            if spec.labels_path:
                lp = _require(Path(spec.labels_path) if Path(spec.labels_path).is_absolute() else path.parent / spec.labels_path)
                y = np.load(lp, allow_pickle=False)
                files.append(lp)
    except (ValueError, OSError) as exc:
        raise DataError(f"{path}: cannot read NumPy data: {exc}") from None
    if y is not None and len(y) != len(x):
        raise DataError(f"{path}: {len(x)} examples but {len(y)} labels")
    return Raw(x, y, files)


# ---------------------------------------------------------------- image folder
def _class_folders(path: Path) -> list[Path]:
    _require(path, "folder")
    folders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise DataError(f"{path}: no class subfolders found")
    return folders


@register_source("image_folder", lambda spec, raw: ImageFeaturizer(spec.image_size, spec.color_mode))
def read_image_folder(spec, path: Path, seed: int = 0) -> Raw:
    exts = {e.lower() for e in spec.extensions}
    files, labels = [], []
    folders = _class_folders(path)
    for k, folder in enumerate(folders):
        for f in sorted(folder.rglob("*")):
            if f.is_file() and f.suffix.lower() in exts:
                files.append(str(f))
                labels.append(folder.name)
    return Raw(files, np.asarray(labels, dtype=object), [Path(f) for f in files], [f.name for f in folders])


# ---------------------------------------------------------------- text
def _text_featurizer(spec, raw: Raw) -> Featurizer:
    return TextFeaturizer(spec.max_tokens, spec.sequence_length, spec.lowercase)


@register_source("text", _text_featurizer)
def read_text(spec, path: Path, seed: int = 0) -> Raw:
    if path.is_dir():
        texts, labels, files = [], [], []
        folders = _class_folders(path)
        for folder in folders:
            for f in sorted(folder.rglob("*.txt")):
                texts.append(f.read_text(encoding="utf-8", errors="replace"))
                labels.append(folder.name)
                files.append(f)
        return Raw(texts, np.asarray(labels, dtype=object), files, [f.name for f in folders])
    columns = read_csv_columns(path, True, ",")
    for col in (spec.text_column, spec.label_column):
        if col not in columns:
            raise DataError(f"{path}: column {col!r} not found (columns: {', '.join(columns)})")
    return Raw(columns[spec.text_column], np.asarray(columns[spec.label_column], dtype=object), [path])


# ---------------------------------------------------------------- tfrecord
@register_source("tfrecord")
def read_tfrecord(spec, path: Path, seed: int = 0) -> Raw:
    """The shards' index (one streaming pass: every record parsed, labels kept); ``x`` holds
    global record numbers, decoded later in tf.data (:mod:`dlcli.data.records`)."""
    from dlcli.data import records

    files = records.shard_files(spec, path)
    counts, y = records.scan(spec, files)
    index = records.RecordIndex(files, counts, y)
    return Raw(np.arange(len(index), dtype=np.int64), y, list(files), None, index)


# ---------------------------------------------------------------- synthetic
@register_source("synthetic")
def read_synthetic(spec, path: Path, seed: int = 0) -> Raw:
    """Learnable data: class-dependent means (or a linear target) plus noise."""
    rng = np.random.default_rng(seed)
    n, shape, k = spec.samples, tuple(spec.shape), spec.num_classes
    if spec.kind == "tokens":
        y = rng.integers(0, k, n)
        steps = shape[0]
        # each class prefers its own slice of the vocabulary
        base = rng.integers(2, spec.vocab_size, (n, steps))
        band = 2 + (y[:, None] * (spec.vocab_size - 2) // k) + rng.integers(0, max(1, (spec.vocab_size - 2) // k), (n, steps))
        pick = rng.random((n, steps)) > spec.noise / (1 + spec.noise)
        return Raw(np.where(pick, band, base).astype(np.int32), y.astype(np.int64), [])
    if spec.kind == "regression":
        x = rng.normal(size=(n, *shape)).astype(np.float32)
        w = rng.normal(size=int(np.prod(shape)))
        y = (x.reshape(n, -1) @ w / np.sqrt(len(w)) + spec.noise * 0.1 * rng.normal(size=n)).astype(np.float32)
        return Raw(x, y, [])
    y = rng.integers(0, k, n)
    centers = rng.normal(size=(k, *shape)).astype(np.float32)
    x = centers[y] + spec.noise * rng.normal(size=(n, *shape)).astype(np.float32)
    return Raw(x.astype(np.float32), y.astype(np.int64), [])

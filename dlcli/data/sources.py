"""Readers, one per ``data.source``: each returns raw records and labels.

``read(spec, path) -> Raw``; a registry maps the source name to its reader and
featurizer factory. Readers check that files exist and are well formed, and
raise :class:`DataError` naming the file (and row or column) otherwise.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.data.featurize import Featurizer, ImageFeaturizer, TabularFeaturizer, TextFeaturizer
from dlcli.errors import DataError


@dataclass
class Raw:
    """Raw records of one file: ``x`` indexable by row lists via :func:`take`."""

    x: Any  # np.ndarray | dict[str, list[str]] | list[str]
    y: np.ndarray | None
    files: list[Path]
    class_names: list[str] | None = None  # folder sources know their classes
    index: Any = None  # streamed: the rows / RecordIndex that ``x`` (row or record numbers) points into

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


STREAMED = frozenset({"image_folder", "tfrecord", "csv", "numpy", "text"})
ROWS = frozenset({"csv", "numpy", "text"})  # read row by row (dlcli.data.rows)


def streamed(spec) -> bool:
    """Whether the source's splits stream from files instead of being generated in memory."""
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
    if kind == "file" and not path.is_file():
        raise DataError(f"{path}: not a regular file (a device or a pipe?); give a data file")
    if kind == "folder" and not path.is_dir():
        raise DataError(f"{path}: expected a folder with one subfolder per class")
    return path


# ---------------------------------------------------------------- csv
def _open_text(path: Path) -> io.TextIOBase:
    from dlcli.data.rows import open_text

    return open_text(path)


def read_csv_columns(path: Path, header: bool, delimiter: str, skip_rows: int = 0) -> dict[str, list[str]]:
    """Every column of a (small) CSV file in memory: the files ``predict`` is given."""
    from dlcli.data.rows import CsvRows, csv_header

    _require(path)
    names = csv_header(path, header, delimiter, skip_rows)
    rows = CsvRows(path, names, names, delimiter, header, skip_rows)
    cols: list[list[str]] = [[] for _ in names]
    for line, fields in rows.lines():
        if len(fields) != len(names):
            raise DataError(f"{path}: line {line}: {len(fields)} fields, expected {len(names)}")
        for c, v in zip(cols, fields, strict=False):
            c.append(v.strip())
    if not cols or not cols[0]:
        raise DataError(f"{path}: no data rows")
    return dict(zip(names, cols, strict=True))


def _col(name: str | int, header: bool) -> str:
    return str(name)


def _csv_featurizer(spec, raw: Raw) -> Featurizer:
    if spec.inputs is not None:
        return Featurizer()  # unused: every input has its own (dlcli.data.inputs)
    cat = [_col(c, spec.header) for c in spec.categorical_columns]
    return TabularFeaturizer(list(raw.index.columns), cat, str(raw.files[0]))


def _shown(names: list[str]) -> str:
    return ", ".join(names[:12]) + ("..." if len(names) > 12 else "")


@register_source("csv", _csv_featurizer)
def read_csv(spec, path: Path, seed: int = 0) -> Raw:
    """The CSV's labels and row count (one validating pass); rows are read when used."""
    from dlcli.data.rows import CsvRows, csv_header, scan_csv

    _require(path)
    names = csv_header(path, spec.header, spec.delimiter, spec.skip_rows)
    label = _col(spec.label_column, spec.header)
    if isinstance(spec.label_column, int) and -len(names) <= spec.label_column < 0:
        label = names[spec.label_column]
    if label not in names:
        raise DataError(f"{path}: label column {label!r} not found (columns: {_shown(names)})")
    features = [c for c in names if c != label]
    if spec.inputs is not None:
        columns, numeric = _input_columns(spec, path, features)
    else:
        columns = features
        if spec.feature_columns is not None:
            columns = [_col(c, spec.header) for c in spec.feature_columns]
            missing = [c for c in columns if c not in features]
            if missing:
                raise DataError(f"{path}: feature column(s) not found: {', '.join(missing)}")
        categorical = [_col(c, spec.header) for c in spec.categorical_columns]
        for c in categorical:
            if c not in columns:
                raise DataError(f"{path}: categorical column {c!r} not found among the features")
        numeric = [c for c in columns if c not in categorical]
    rows = CsvRows(path, names, columns, spec.delimiter, spec.header, spec.skip_rows)
    n, y = scan_csv(rows, label, numeric)
    return Raw(np.arange(n, dtype=np.int64), y, [path], None, rows)


def _input_columns(spec, path: Path, features: list[str]) -> tuple[list[str], list[str]]:
    """The columns named by ``data.inputs`` (each checked to exist), and the numeric ones."""
    used: list[str] = []
    numeric: list[str] = []
    for name, inp in spec.inputs.items():
        for c in (_col(c, spec.header) for c in inp.columns):
            if c not in features:
                raise DataError(f"{path}: data.inputs.{name}: column {c!r} not found (columns: {_shown(features)})")
            if c not in used:
                used.append(c)
            if inp.type == "numeric" and c not in numeric:
                numeric.append(c)
    return used, numeric


# ---------------------------------------------------------------- numpy
@register_source("numpy")
def read_numpy(spec, path: Path, seed: int = 0) -> Raw:
    """Labels in memory; features memory-mapped (.npy, or an uncompressed .npz member)."""
    import zipfile

    from dlcli.data.rows import ArrayRows, check_finite, map_array

    _require(path)
    files = [path]
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if spec.x_key not in z:
                    raise DataError(f"{path}: no array {spec.x_key!r} (has: {', '.join(z.files)})")
                y = z.get(spec.y_key)
            x = map_array(path, spec.x_key)
        else:
            x = map_array(path)
            y = None
            if spec.labels_path:
                lp = _require(Path(spec.labels_path) if Path(spec.labels_path).is_absolute() else path.parent / spec.labels_path)
                y = np.load(lp, allow_pickle=False)
                files.append(lp)
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read NumPy data: {exc}") from exc
    if x.ndim == 0:
        raise DataError(f"{path}: expected an array of examples, found a single value")
    check_finite(x, path, "example")
    if y is not None and len(y) != len(x):
        raise DataError(f"{path}: {len(x)} examples but {len(y)} labels")
    return Raw(np.arange(len(x), dtype=np.int64), y, files, None, ArrayRows(x, files))


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
    """A folder of class folders of .txt files (listed, read when used), or a CSV with a
    text and a label column (one validating pass keeps the labels)."""
    from dlcli.data.rows import CsvRows, TextFiles, csv_header, scan_csv

    if path.is_dir():
        labels, files = [], []
        folders = _class_folders(path)
        for folder in folders:
            for f in sorted(folder.rglob("*.txt")):
                if not f.is_file():  # a folder named *.txt, a pipe, a device
                    continue
                labels.append(folder.name)
                files.append(f)
        return Raw(np.arange(len(files), dtype=np.int64), np.asarray(labels, dtype=object), files,
                   [f.name for f in folders], TextFiles(files))
    _require(path)
    names = csv_header(path, True, ",")
    for col in (spec.text_column, spec.label_column):
        if col not in names:
            raise DataError(f"{path}: column {col!r} not found (columns: {', '.join(names)})")
    rows = CsvRows(path, names, [spec.text_column], single=True)
    n, y = scan_csv(rows, spec.label_column, [])
    return Raw(np.arange(n, dtype=np.int64), y, [path], None, rows)


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

"""Row sources streamed from disk: CSV (gz too), NumPy arrays (memory-mapped), text.

Reading one of these sources is a single validating pass over the file (:func:`scan_csv`:
every row's field count, every numeric value, the labels) that keeps only the labels and
the number of rows. A split is a set of row numbers (``members``). Its examples are read
``CHUNK`` rows at a time, featurized and normalized with the run's fitted preprocessing (the
same NumPy code that ``predict`` and export use, so streamed and in-memory examples are
bit-equal), and fed to tf.data. When ``data.cache`` resolves to memory (``auto``: the
featurized split fits ``cache_budget_mb``), the split is featurized once into an
:class:`~dlcli.data.stream.ArraySplit` instead: small data keeps its in-memory speed.

Each kind of rows gives ``files``, ``keys(rows, root)`` (stable keys for a hash split),
``read(rows)`` (the raw records of sorted row numbers, as the featurizer takes them) and
``chunks(rows)`` (the same, ``CHUNK`` rows at a time, in one pass over the file).
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlcli.data.featurize import _is_float
from dlcli.errors import DataError

CHUNK = 1024  # rows featurized at once while streaming


def open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


@dataclass
class CsvRows:
    """A CSV file read row by row. ``columns``: the feature columns a chunk holds; ``single``:
    a chunk is that one column's values (the text source) instead of a dict of columns."""

    path: Path
    names: list[str]
    columns: list[str]
    delimiter: str = ","
    header: bool = True
    skip_rows: int = 0
    single: bool = False
    random_access = False
    _pos: list[int] = field(default_factory=list, repr=False)

    @property
    def files(self) -> list[Path]:
        return [self.path]

    def lines(self) -> Iterator[tuple[int, list[str]]]:
        """``(line number, fields)`` of every data row (blank lines skipped)."""
        try:
            with open_text(self.path) as fh:
                for _ in range(self.skip_rows):
                    fh.readline()
                reader = csv.reader(fh, delimiter=self.delimiter)
                first = self.header
                for row in reader:
                    if not row:
                        continue
                    if first:
                        first = False
                        continue
                    yield reader.line_num + self.skip_rows, row
        except (OSError, UnicodeDecodeError, csv.Error, EOFError) as exc:
            raise DataError(f"{self.path}: cannot read CSV: {exc}") from exc

    def keys(self, rows: np.ndarray, root: Path) -> list[str]:
        return [str(int(r)) for r in rows]

    def _pack(self, cols: list[list[str]]):
        if self.single:
            return cols[0]
        return dict(zip(self.columns, cols, strict=True))

    def chunks(self, rows: np.ndarray, size: int = CHUNK) -> Iterator:
        """The records of the sorted row numbers ``rows``, ``size`` at a time, in one pass."""
        want = np.asarray(rows, np.int64).tolist()  # Python ints: compared once per line
        idx = [self.names.index(c) for c in self.columns]
        picked: list[list[str]] = []
        k = 0
        for r, (_, fields) in enumerate(self.lines()):
            if k == len(want):
                break
            if r != want[k]:
                continue
            k += 1
            picked.append(fields)
            if len(picked) == size:
                yield self._pack(self._columns(picked, idx))
                picked = []
        if picked:
            yield self._pack(self._columns(picked, idx))

    @staticmethod
    def _columns(picked: list[list[str]], idx: list[int]) -> list[list[str]]:
        """Rows of fields -> the used columns, values stripped (a transpose, not a loop per field)."""
        every = list(zip(*picked, strict=True))
        return [[v.strip() for v in every[i]] for i in idx]

    def read(self, rows: np.ndarray):
        parts = list(self.chunks(rows, max(1, len(rows))))
        return parts[0] if parts else self._pack([[] for _ in self.columns])


def csv_header(path: Path, header: bool, delimiter: str, skip_rows: int = 0) -> list[str]:
    """The column names (or 0, 1, ... without a header) from the first row."""
    probe = CsvRows(path, [], [], delimiter, False, skip_rows)
    first = next(probe.lines(), None)
    if first is None:
        raise DataError(f"{path}: the file is empty")
    return [c.strip() for c in first[1]] if header else [str(i) for i in range(len(first[1]))]


def scan_csv(rows: CsvRows, label: str | None, numeric: list[str]) -> tuple[int, np.ndarray | None]:
    """One validating pass: every row's field count and numeric values; the labels kept."""
    li = rows.names.index(label) if label is not None else None
    checks = [(c, rows.names.index(c)) for c in numeric]
    labels: list[str] = []
    pending: list[tuple[int, list[str]]] = []
    n = 0
    for line, fields in rows.lines():
        if len(fields) != len(rows.names):
            raise DataError(f"{rows.path}: line {line}: {len(fields)} fields, expected {len(rows.names)}")
        if li is not None:
            labels.append(fields[li].strip())
        pending.append((line, fields))
        n += 1
        if len(pending) == CHUNK:
            _check_numbers(rows.path, pending, checks, n - len(pending))
            pending = []
    _check_numbers(rows.path, pending, checks, n - len(pending))
    if n == 0:
        raise DataError(f"{rows.path}: no data rows")
    return n, (np.asarray(labels, dtype=object) if li is not None else None)


def _check_numbers(path: Path, pending, checks, first_row: int) -> None:
    for col, i in checks:
        values = [f[i].strip() for _, f in pending]
        try:
            numbers = np.asarray(values, dtype=np.float32)
        except ValueError as exc:
            bad = next(k for k, v in enumerate(values) if not _is_float(v))
            raise DataError(
                f"{path}: column {col!r}, row {first_row + bad + 1} (line {pending[bad][0]}): {values[bad]!r} "
                "is not a number (list it in data.categorical_columns to one-hot encode it)"
            ) from exc
        finite = np.isfinite(numbers)
        if not finite.all():
            bad = int(np.flatnonzero(~finite)[0])
            raise DataError(
                f"{path}: column {col!r}, row {first_row + bad + 1} (line {pending[bad][0]}): {values[bad]!r} "
                "is not a finite number (fill or drop missing values before training)"
            )


@dataclass
class TextFiles:
    """One text file per example (a folder of class folders)."""

    paths: list[Path]
    random_access = True

    @property
    def files(self) -> list[Path]:
        return list(self.paths)

    def keys(self, rows: np.ndarray, root: Path) -> list[str]:
        out = []
        for r in rows:
            f = Path(self.paths[int(r)])
            out.append(f.relative_to(root).as_posix() if f.is_relative_to(root) else str(f))
        return out

    def read(self, rows: np.ndarray) -> list[str]:
        out = []
        for r in rows:
            try:
                out.append(Path(self.paths[int(r)]).read_text(encoding="utf-8", errors="replace"))
            except OSError as exc:
                raise DataError(f"{self.paths[int(r)]}: cannot read: {exc.strerror or exc}") from exc
        return out

    def chunks(self, rows: np.ndarray, size: int = CHUNK) -> Iterator[list[str]]:
        for i in range(0, len(rows), size):
            yield self.read(rows[i:i + size])


@dataclass
class ArrayRows:
    """Rows of a NumPy array: memory-mapped from an .npy file, or from an uncompressed
    (stored) member of an .npz; a compressed .npz member is read into memory."""

    array: np.ndarray
    source: list[Path]
    random_access = True

    @property
    def files(self) -> list[Path]:
        return list(self.source)

    def keys(self, rows: np.ndarray, root: Path) -> list[str]:
        return [str(int(r)) for r in rows]

    def read(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, np.int64)
        if len(rows) and rows[-1] - rows[0] + 1 == len(rows):  # a run of rows: one slice
            return np.asarray(self.array[rows[0]:rows[-1] + 1])
        return np.asarray(self.array[rows])

    def chunks(self, rows: np.ndarray, size: int = CHUNK) -> Iterator[np.ndarray]:
        for i in range(0, len(rows), size):
            yield self.read(rows[i:i + size])


def check_finite(array: np.ndarray, path: Path, what: str = "row") -> None:
    """A NaN or infinity in float features, found in one pass of ``CHUNK * 64`` rows at a time."""
    if array.dtype.kind not in "fc":
        return
    step = CHUNK * 64
    for start in range(0, len(array), step):
        ok = np.isfinite(np.asarray(array[start:start + step]))
        if not ok.all():
            bad = start + int(np.argwhere(~ok)[0][0])
            raise DataError(f"{path}: {what} {bad} holds NaN or infinity (fill or drop missing values before training)")


def map_array(path: Path, key: str | None = None) -> np.ndarray:
    """``path`` (.npy) or its member ``key`` (.npz), memory-mapped where the file allows."""
    if key is None:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            with zf.open(info) as fh:
                return np.lib.format.read_array(fh, allow_pickle=False)
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
            start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
            fh.seek(start)
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            if dtype.hasobject:
                raise ValueError("object arrays cannot be loaded (allow_pickle=False)")
            offset = fh.tell()
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)


@dataclass
class RowSplit:
    """The rows ``members`` (sorted) of a row source, featurized ``CHUNK`` rows at a time by
    ``transform`` (raw records -> model input, NumPy) as tf.data reads them; ``y``: the
    members' encoded labels; ``signature``: the ``tf.TensorSpec`` of one example's input."""

    rows: object
    members: np.ndarray
    y: np.ndarray
    transform: Callable
    signature: object
    sample_range: tuple[float, float] = (0.0, 1.0)
    reconstruct: bool = False

    streamed = True
    shuffle_all = False  # rows shuffle in a bounded buffer, after reading

    def __len__(self) -> int:
        return len(self.members)

    def value_range(self) -> tuple[float, float]:
        return self.sample_range

    @property
    def dtype(self):
        """The input's NumPy dtype (float32 for several inputs: augmentation refuses those anyway)."""
        return np.float32 if isinstance(self.signature, dict) else self.signature.dtype.as_numpy_dtype

    def _blocks(self, positions: np.ndarray, seed: int | None) -> list[np.ndarray]:
        """Positions (into ``members``) in blocks of ``CHUNK``; a random-access source reads
        its blocks in a seeded order (a file read front to back keeps its order)."""
        blocks = [positions[i:i + CHUNK] for i in range(0, len(positions), CHUNK)]
        if seed is not None and self.rows.random_access and len(blocks) > 1:
            blocks = [blocks[i] for i in np.random.default_rng(seed).permutation(len(blocks))]
        return blocks

    def _generate(self, positions: np.ndarray, seed: int | None, trace: str | None = None):
        blocks = self._blocks(positions, seed)

        def gen():
            if self.rows.random_access:
                raws = (self.rows.read(self.members[b]) for b in blocks)
            else:
                raws = self.rows.chunks(self.members[positions], CHUNK)
            for block, raw in zip(blocks, raws, strict=True):
                if trace:  # DLCLI_DATA_TRACE: "seed row" for every row this worker read
                    with open(trace, "a", encoding="utf-8") as fh:
                        fh.writelines(f"{seed} {r}\n" for r in self.members[block])
                x = self.transform(raw)
                yield x, (x if self.reconstruct else self.y[block])

        return gen

    def _dataset(self, positions: np.ndarray, seed: int | None = None, trace: str | None = None):
        import tensorflow as tf

        batched = tf.nest.map_structure(lambda s: tf.TensorSpec((None, *s.shape), s.dtype), self.signature)
        y_spec = batched if self.reconstruct else tf.TensorSpec((None, *self.y.shape[1:]), tf.as_dtype(self.y.dtype))
        ds = tf.data.Dataset.from_generator(self._generate(positions, seed, trace), output_signature=(batched, y_spec))
        return ds.unbatch()

    def examples(self, shard: tuple[int, int] = (1, 0), seed: int | None = None, cache: bool = True):
        """This worker's rows (``shard``: every n-th, the offset turning with the epoch's seed),
        featurized; the training pipeline shuffles them in its bounded buffer."""
        positions = np.arange(len(self.members))
        if shard[0] > 1:
            positions = positions[(positions + (seed or 0)) % shard[0] == shard[1]]
        trace = os.environ.get("DLCLI_DATA_TRACE")
        return self._dataset(positions, seed, f"{trace}.{shard[1]}" if trace else None), None, shard[0] > 1

    @property
    def x(self):
        """Every example featurized into one array: for small data and tests only."""
        from dlcli.data.inputs import concat_rows

        return concat_rows([self.transform(raw) for raw in self.rows.chunks(self.members, CHUNK)])

    def dataset(self, batch_size: int, one_hot: int | None = None):
        import tensorflow as tf

        from dlcli.data.stream import _batched

        ds = _batched(self._dataset(np.arange(len(self.members))), None, batch_size, one_hot)
        return ds.apply(tf.data.experimental.assert_cardinality(-(-len(self) // batch_size)))

    def find_unreadable(self) -> tuple[str, str] | None:
        try:
            for raw in self.rows.chunks(self.members, CHUNK):
                self.transform(raw)
        except DataError as exc:
            name, _, why = str(exc).partition(": ")
            return name, why
        return None

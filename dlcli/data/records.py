"""TFRecord shards streamed through tf.data: nothing but labels is held in memory.

Reading a ``tfrecord`` source takes one streaming pass over every shard (parallel reads,
parsing with the recipe's ``features`` spec in the graph) that validates every record
and keeps only the labels and the number of records per shard; a bad shard or a record
that does not match the spec fails there, naming the file. A split is then a set of
global record indices (``members``). Reading a split interleaves its shards (shuffled
per epoch), keeps its members, parses them in parallel and shuffles them in a bounded
buffer (``data.pipeline.shuffle_buffer``). Under multi-worker, each worker reads its own
shards when there are at least as many shards as workers, else its share of the records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlcli.data.stream import tf_message
from dlcli.errors import DataError

_DTYPES = {"float32": "float32", "int64": "int64", "string": "string"}
_COMPRESSION = {"none": None, "gzip": "GZIP", "zlib": "ZLIB"}


def feature_spec(spec) -> dict:
    import tensorflow as tf

    return {k: tf.io.FixedLenFeature(v.shape, tf.dtypes.as_dtype(_DTYPES[v.dtype])) for k, v in spec.features.items()}


def shard_files(spec, path: Path) -> list[Path]:
    if any(c in path.name for c in "*?["):
        files = sorted(f for f in path.parent.glob(path.name) if f.is_file())
        if not files:
            raise DataError(f"{path}: no TFRecord files match")
        return files
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    if not path.is_file():
        raise DataError(f"{path}: not a regular file (a folder, a device or a pipe?); give TFRecord files")
    return [path]


def scan(spec, files: list[Path]) -> tuple[list[int], np.ndarray]:
    """One streaming pass: records per shard and every record's label (every record parsed)."""
    import tensorflow as tf

    fspec = feature_spec(spec)
    counts, labels = [], []
    for f in files:
        ds = tf.data.TFRecordDataset(str(f), compression_type=_COMPRESSION[spec.compression])
        ds = ds.map(lambda r: tf.io.parse_single_example(r, fspec)[spec.label],
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(4096)
        try:
            parts = [np.asarray(b) for b in ds.as_numpy_iterator()]
        except tf.errors.OpError as exc:
            raise DataError(f"{f}: cannot read TFRecord: {exc.message.strip().splitlines()[0][:200]}") from exc
        ys = np.concatenate(parts) if parts else np.zeros((0,))
        counts.append(len(ys))
        labels.append(ys)
    y = np.concatenate(labels) if labels else np.zeros((0,))
    if y.dtype.kind in "SO":
        y = np.asarray([v.decode() if isinstance(v, bytes) else v for v in y], dtype=object)
    if y.ndim > 1:
        y = y.reshape(len(y), -1).squeeze(-1) if y.shape[1:] == (1,) else y
    return counts, y


@dataclass
class RecordIndex:
    """Every record of a set of shards: ``files``, records per shard, and labels."""

    files: list[Path]
    counts: list[int]
    y: np.ndarray

    def __len__(self) -> int:
        return int(sum(self.counts))

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.counts)[:-1]]).astype(np.int64)

    def keys(self, rows: np.ndarray, root: Path) -> list[str]:
        """``shard name:record number in it`` of global record numbers (stable split keys)."""
        offsets = self.offsets
        shard = np.searchsorted(offsets, rows, side="right") - 1
        return [f"{self.files[s].name}:{g - offsets[s]}" for s, g in zip(shard, rows, strict=True)]


@dataclass
class RecordSplit:
    """The records ``members`` (sorted global indices) of ``index``; ``element(record)``
    (graph) gives ``(x, y)`` with ``y`` encoded as the model wants it."""

    index: RecordIndex
    members: np.ndarray
    y: np.ndarray
    element: object
    shape: tuple[int, ...]
    compression: str | None
    buffer: int = 10000
    sample_range: tuple[float, float] = (0.0, 1.0)
    cache: str = "none"  # memory or none (disk is treated as none)
    _mask: np.ndarray | None = field(default=None, repr=False)
    _cached: dict = field(default_factory=dict, repr=False)

    streamed = True
    shuffle_all = False  # records shuffle in a bounded buffer, after reading

    def __len__(self) -> int:
        return len(self.members)

    def value_range(self) -> tuple[float, float]:
        return self.sample_range

    def _member_mask(self):
        if self._mask is None:
            mask = np.zeros(len(self.index), bool)
            mask[self.members] = True
            self._mask = mask
        return self._mask

    def records(self, seed: int | None = None, shard: tuple[int, int] = (1, 0)):
        """``(record)`` of this split; shards in a seeded order, interleaved (None: in index order);
        ``shard``: this worker's shards (or its share of the records, if too few shards)."""
        import tensorflow as tf

        order = np.arange(len(self.index.files))
        if seed is not None:
            order = np.random.default_rng(seed).permutation(order)
        by_file = shard[0] > 1 and len(order) >= shard[0]
        if by_file:
            order = order[shard[1]::shard[0]]
        mask = tf.constant(self._member_mask())
        comp = self.compression

        def read(i):
            f = tf.gather(tf.constant([str(p) for p in self.index.files]), i)
            start = tf.gather(tf.constant(self.index.offsets), i)
            ds = tf.data.TFRecordDataset(f, compression_type=comp).enumerate(start)
            return ds.filter(lambda g, r: tf.gather(mask, g)).map(lambda g, r: r)

        # training (a seed): shards read 8 at a time, interleaved; otherwise one after the
        # other, so records come in index order, the order of the split's host-side labels
        cycle = max(1, min(8, len(order))) if seed is not None else 1
        ds = tf.data.Dataset.from_tensor_slices(order).interleave(
            read, cycle_length=cycle, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        if shard[0] > 1 and not by_file:
            ds = ds.shard(*shard)
        return ds

    def examples(self, shard: tuple[int, int] = (1, 0), seed: int | None = None, cache: bool = True):
        """The training pipeline's source: records (shard order shuffled with ``seed``) and
        the parse; with ``data.cache: memory``, this worker's parsed examples, cached."""
        if self.cache != "memory":
            return self.records(seed, shard), self.element, shard[0] > 1
        if shard not in self._cached:
            import tensorflow as tf

            parsed = self.records(None, shard).map(self.element, num_parallel_calls=tf.data.AUTOTUNE,
                                                   deterministic=True)
            self._cached[shard] = parsed.cache()
        return self._cached[shard], None, shard[0] > 1

    @property
    def x(self) -> np.ndarray:
        """Every example parsed into one array: for small data and tests only."""
        batches = [b for b, _ in self.dataset(4096).as_numpy_iterator()]
        return np.concatenate(batches) if batches else np.zeros((0, *self.shape), np.float32)

    def dataset(self, batch_size: int, one_hot: int | None = None):
        import tensorflow as tf

        from dlcli.data.stream import _batched

        ds = _batched(self.records(), self.element, batch_size, one_hot)  # interleave + filter: count unknown
        return ds.apply(tf.data.experimental.assert_cardinality(-(-len(self) // batch_size)))

    def find_unreadable(self) -> tuple[str, str] | None:
        import tensorflow as tf

        for f in self.index.files:
            try:
                for _ in tf.data.TFRecordDataset(str(f), compression_type=self.compression).batch(4096):
                    pass
            except tf.errors.OpError as exc:
                return str(f), tf_message(exc)
        return None


def declared_inputs(example: dict, spec):
    """The recipe's ``inputs`` features of one parsed record, flattened and concatenated."""
    import tensorflow as tf

    return tf.concat([tf.reshape(tf.cast(example[k], tf.float32), [-1]) for k in spec.inputs], 0)


def make_element(spec, pre, task: str):
    """``record -> (x, y)`` in the graph: the declared inputs flattened and concatenated,
    the run's reshape and normalization, the label as a class id (or target)."""
    import tensorflow as tf

    fspec = feature_spec(spec)
    table = None
    if task == "classification" and pre.label_kind == "str":
        table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(pre.labels), tf.range(len(pre.labels), dtype=tf.int64)), -1)

    def element(record):
        ex = tf.io.parse_single_example(record, fspec)
        x = pre.tf_example(declared_inputs(ex, spec))
        if task == "reconstruction":
            return x, x
        y = ex[spec.label]
        if task == "classification":
            y = table.lookup(y) if table is not None else tf.cast(y, tf.int64)
        else:
            y = tf.cast(y, tf.float32)
        return x, y

    return element


def sample_x(spec, index: RecordIndex, rows: np.ndarray) -> np.ndarray:
    """The flattened, concatenated inputs of the records ``rows`` (global indices), before
    preprocessing: the bounded sample that normalization is fitted on."""
    import tensorflow as tf

    fspec = feature_spec(spec)
    split = RecordSplit(index, np.sort(rows), np.zeros(len(rows)), None, (), _COMPRESSION[spec.compression])

    def raw(record):
        ex = tf.io.parse_single_example(record, fspec)
        return declared_inputs(ex, spec)

    parts = list(split.records().map(raw, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                 .batch(4096).as_numpy_iterator())
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def compression(spec) -> str | None:
    return _COMPRESSION[spec.compression]

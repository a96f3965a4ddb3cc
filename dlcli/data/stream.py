"""Splits of a data set: held in memory, or streamed from files and decoded in tf.data.

An :class:`ArraySplit` holds its examples as one NumPy array (CSV, NumPy, text and
synthetic sources). A :class:`FileSplit` holds only keys (file paths) and labels; its
examples are decoded in the ``tf.data`` graph, in parallel, when a pipeline reads them,
and kept between epochs only as ``data.cache`` says (memory, a cache file on disk, or
nowhere). :class:`~dlcli.data.records.RecordSplit` (TFRecord shards) is the third kind.
All give the same interface to the trainer:

* ``examples(shard, seed, cache)`` -> ``(dataset, element, sharded)``: a dataset of
  examples, or of keys / records with the per-element ``element`` (decode) still to apply
  after shuffling; ``sharded``: the dataset is already this worker's shard;
* ``dataset(batch_size, one_hot)`` -> batches of ``(x, y)`` for evaluation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlcli.errors import DataError, raise_if_bug


def one_hot_map(k: int | None):
    """A ``(x, y[, w]) -> (x, one_hot(y)[, w])`` map, in the graph (None when ``k`` is None)."""
    if k is None:
        return None
    import tensorflow as tf

    def encode(x, y, *w):
        return (x, tf.one_hot(tf.cast(y, tf.int32), k), *w)

    return encode


@dataclass
class ArraySplit:
    """A split held in memory."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    streamed = False

    def examples(self, shard: tuple[int, int] = (1, 0), seed: int | None = None, cache: bool = True):
        """``(x, y)`` of the whole split (in-memory data is sharded by tf.data's DATA policy)."""
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices((self.x, self.y))
        return (ds.cache() if cache else ds), None, False

    def value_range(self) -> tuple[float, float]:
        return float(self.x.min()), float(self.x.max())

    def dataset(self, batch_size: int, one_hot: int | None = None):
        return _batched(self.examples(cache=False)[0], None, batch_size, one_hot)


@dataclass
class FileSplit:
    """A split streamed from files: ``keys`` are file paths, ``decode(key)`` (TensorFlow,
    graph mode) gives the model-ready example. ``cache``: memory, disk or none."""

    keys: list[str]
    y: np.ndarray
    decode: Callable
    shape: tuple[int, ...]
    cache: str = "none"
    cache_file: str | None = None
    sample_range: tuple[float, float] = (0.0, 1.0)  # of the examples normalization was fitted on
    reconstruct: bool = False  # the target is the example itself (autoencoders)
    _cached: dict = field(default_factory=dict, repr=False)

    streamed = True
    shuffle_all = True  # keys are small: the whole split is shuffled before decoding

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def x(self) -> np.ndarray:
        """Every example decoded into one array: for small data and tests only."""
        batches = [b for b, _ in self.dataset(256).as_numpy_iterator()]
        return np.concatenate(batches) if batches else np.zeros((0, *self.shape), np.float32)

    def value_range(self) -> tuple[float, float]:
        return self.sample_range

    def keyed(self):
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((self.keys, self.y))

    def examples(self, shard: tuple[int, int] = (1, 0), seed: int | None = None, cache: bool = True):
        """``cache: none``: ``(key, y)`` pairs and the decode to apply after shuffling and
        sharding. Otherwise the decoded examples of this worker's shard, cached (built once
        per shard, reused every epoch)."""
        if self.cache == "none":
            return self.keyed(), self.element, False
        if shard not in self._cached:
            import tensorflow as tf

            ds = self.keyed()
            if shard[0] > 1:
                ds = ds.shard(*shard)
            ds = ds.map(self.element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
            self._cached[shard] = ds.cache(self._cache_path(shard) if self.cache == "disk" else "")
        return self._cached[shard], None, shard[0] > 1

    def _cache_path(self, shard: tuple[int, int]) -> str:
        if not self.cache_file:
            raise DataError("data.cache: disk needs a run directory for its cache file")
        path = f"{self.cache_file}-{shard[1]}of{shard[0]}"
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        for stale in Path(path).parent.glob(Path(path).name + "*.lockfile"):  # left by a killed run
            stale.unlink()
        return path

    def element(self, key, y):
        """``(key, y) -> (x, y)``, in the graph."""
        x = self.decode(key)
        return x, (x if self.reconstruct else y)

    def dataset(self, batch_size: int, one_hot: int | None = None):
        return _batched(self.keyed(), self.element, batch_size, one_hot)

    def find_unreadable(self) -> tuple[str, str] | None:
        """The first file that does not decode, and why (a slow scan, for error messages)."""
        for key in self.keys:
            try:
                self.decode(key)
            except Exception as exc:  # noqa: BLE001 - TF raises several types
                raise_if_bug(exc)
                return key, tf_message(exc)
        return None


def tf_message(exc: Exception) -> str:
    """The first line of a TensorFlow error without its node and op decorations."""
    import re

    line = (str(getattr(exc, "message", "") or exc).strip().splitlines() or [type(exc).__name__])[0]
    line = re.sub(r"\{\{[^}]*\}\}\s*", "", line)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", line).strip() or type(exc).__name__


def _batched(ds, element, batch_size: int, one_hot: int | None):
    import tensorflow as tf

    if element is not None:
        ds = ds.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(batch_size)
    if one_hot is not None:
        ds = ds.map(one_hot_map(one_hot))
    return ds.prefetch(tf.data.AUTOTUNE)


def choose_cache(setting: str, examples: int, shape: tuple[int, ...], budget_mb: float) -> str:
    """``data.cache: auto``: memory when the split's decoded float32 size fits the budget."""
    if setting != "auto":
        return setting
    size_mb = examples * int(np.prod(shape)) * 4 / 2**20
    return "memory" if size_mb <= budget_mb else "none"


def data_trace(worker: int):
    """``DLCLI_DATA_TRACE=FILE``: every key a worker decodes is appended to ``FILE.<worker>``
    (a debugging aid, and how the tests prove that workers read disjoint shards)."""
    target = os.environ.get("DLCLI_DATA_TRACE")
    if not target:
        return None
    import tensorflow as tf

    def record(key):
        with open(f"{target}.{worker}", "a", encoding="utf-8") as fh:
            fh.write(key.numpy().decode() + "\n")
        return key

    def traced(key, y):
        key = tf.py_function(record, [key], tf.string)
        key.set_shape([])
        return key, y

    return traced

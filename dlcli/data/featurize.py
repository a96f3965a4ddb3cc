"""Featurizers turn raw records into numeric arrays with state fitted on training data.

Each one serialises to a plain dict (``preprocessing.json``) so ``predict`` and
``evaluate`` replay exactly the training preprocessing, and so can a device team.
"""

from __future__ import annotations

import re
from collections import Counter
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import numpy as np

from dlcli.errors import DataError, raise_if_bug

_READING: ContextVar[str | None] = ContextVar("dlcli_reading", default=None)


@contextmanager
def reading(path):
    """Featurizer errors inside name ``path`` (e.g. ``predict``'s input), not the training file."""
    token = _READING.set(str(path))
    try:
        yield
    finally:
        _READING.reset(token)


class Featurizer:
    kind = "identity"

    def fit(self, raw: Any) -> Featurizer:
        """Fitted state from ``raw`` (all of it at once)."""
        self.fit_partial(raw)
        self.fit_done()
        return self

    def fit_partial(self, raw: Any) -> None:
        """Accumulate from one chunk of a split read in chunks (:meth:`fit_done` finishes)."""

    def fit_done(self) -> None:
        pass

    def transform(self, raw: Any) -> np.ndarray:
        arr = np.asarray(raw)
        if arr.dtype.kind in "iub":
            return arr
        try:
            return arr.astype(np.float32)
        except (TypeError, ValueError) as exc:
            raise DataError(f"features must be numeric, got dtype {arr.dtype}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Featurizer:
        kinds = {c.kind: c for c in (Featurizer, TabularFeaturizer, TextFeaturizer, ImageFeaturizer, CategoryFeaturizer)}
        cls = kinds[d["kind"]]
        obj = cls.__new__(cls)
        obj.__dict__.update({k: v for k, v in d.items() if k != "kind"})
        return obj


class TabularFeaturizer(Featurizer):
    """Columns of strings -> float features; categorical columns one-hot encoded."""

    kind = "tabular"

    def __init__(self, columns: list[str], categorical: list[str], file: str):
        self.columns = columns
        self.categorical_columns = categorical
        self.vocab: dict[str, list[str]] = {}
        self.file = file

    def fit_partial(self, raw: dict[str, list[str]]) -> None:
        seen = self.__dict__.setdefault("_seen", {})
        for col in self.categorical_columns:
            seen.setdefault(col, set()).update(raw[col])

    def fit_done(self) -> None:
        seen = self.__dict__.pop("_seen", {})
        self.vocab = {col: sorted(seen.get(col, ())) for col in self.categorical_columns}

    def feature_names(self) -> list[str]:
        names = []
        for col in self.columns:
            if col in self.vocab:
                names += [f"{col}={v}" for v in self.vocab[col]]
            else:
                names.append(col)
        return names

    def transform(self, raw: dict[str, list[str]]) -> np.ndarray:
        parts = []
        for col in self.columns:
            if col not in raw:
                raise DataError(f"{_READING.get() or self.file}: column {col!r} is missing (have: {', '.join(raw)})")
            values = raw[col]
            if col in self.vocab:
                index = {v: i for i, v in enumerate(self.vocab[col])}
                onehot = np.zeros((len(values), len(index)), np.float32)
                for r, v in enumerate(values):
                    if v in index:  # unseen categories encode as all zeros
                        onehot[r, index[v]] = 1.0
                parts.append(onehot)
            else:
                try:
                    parts.append(np.asarray(values, dtype=np.float32)[:, None])
                except ValueError as exc:
                    bad = next(i for i, v in enumerate(values) if not _is_float(v))
                    raise DataError(
                        f"{_READING.get() or self.file}: column {col!r}, row {bad + 1}: {values[bad]!r} is not a number "
                        "(list it in data.categorical_columns to one-hot encode it)"
                    ) from exc
        return np.concatenate(parts, axis=1) if parts else np.zeros((0, 0), np.float32)


class CategoryFeaturizer(Featurizer):
    """Columns of categories -> int32 ids, one per column: 1.. for the training split's
    sorted categories, 0 for a category never seen in training (for an Embedding)."""

    kind = "category"

    def __init__(self, columns: list[str]):
        self.columns = list(columns)
        self.vocab: dict[str, list[str]] = {}

    def fit_partial(self, raw: dict[str, list[str]]) -> None:
        seen = self.__dict__.setdefault("_seen", {})
        for c in self.columns:
            seen.setdefault(c, set()).update(raw[c])

    def fit_done(self) -> None:
        seen = self.__dict__.pop("_seen", {})
        self.vocab = {c: sorted(seen.get(c, ())) for c in self.columns}

    def transform(self, raw: dict[str, list[str]]) -> np.ndarray:
        out = []
        for c in self.columns:
            index = {v: i + 1 for i, v in enumerate(self.vocab[c])}
            out.append(np.asarray([index.get(v, 0) for v in raw[c]], np.int32))
        return np.stack(out, axis=1)

    @property
    def vocab_size(self) -> int:
        return 1 + max(len(v) for v in self.vocab.values())


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


_TOKEN = re.compile(r"[\w']+", re.UNICODE)


class TextFeaturizer(Featurizer):
    """Text -> fixed-length int token ids. 0 = padding, 1 = out of vocabulary."""

    kind = "text"

    def __init__(self, max_tokens: int, sequence_length: int, lowercase: bool):
        self.max_tokens = max_tokens
        self.sequence_length = sequence_length
        self.lowercase = lowercase
        self.vocabulary: list[str] = []

    def tokens(self, text: str) -> list[str]:
        return _TOKEN.findall(text.lower() if self.lowercase else text)

    def fit_partial(self, raw: list[str]) -> None:
        counts = self.__dict__.setdefault("_counts", Counter())
        for text in raw:
            counts.update(self.tokens(text))

    def fit_done(self) -> None:
        counts = self.__dict__.pop("_counts", Counter())
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        self.vocabulary = [t for t, _ in ranked[: self.max_tokens - 2]]

    def transform(self, raw: list[str]) -> np.ndarray:
        index = {t: i + 2 for i, t in enumerate(self.vocabulary)}
        out = np.zeros((len(raw), self.sequence_length), np.int32)
        for r, text in enumerate(raw):
            ids = [index.get(t, 1) for t in self.tokens(text)][: self.sequence_length]
            out[r, : len(ids)] = ids
        return out

    @property
    def vocab_size(self) -> int:
        return len(self.vocabulary) + 2


class ImageFeaturizer(Featurizer):
    """Image files -> float arrays (height, width, channels), values 0..255."""

    kind = "image"

    def __init__(self, image_size: list[int], color_mode: str):
        self.image_size = list(image_size)
        self.color_mode = color_mode

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "grayscale" else 3

    def tf_decode(self, path):
        """One image file -> float32 (height, width, channels), in the graph (tf.data)."""
        import tensorflow as tf

        img = tf.io.decode_image(tf.io.read_file(path), channels=self.channels, expand_animations=False)
        img.set_shape([None, None, self.channels])
        return tf.image.resize(tf.cast(img, tf.float32), self.image_size)

    def transform(self, raw: list[str]) -> np.ndarray:
        out = np.zeros((len(raw), *self.image_size, self.channels), np.float32)
        for i, path in enumerate(raw):
            try:
                out[i] = self.tf_decode(path).numpy()
            except Exception as exc:  # TF raises several types
                raise_if_bug(exc)
                raise DataError(f"{path}: cannot decode image: {str(exc).splitlines()[0]}") from exc
        return out

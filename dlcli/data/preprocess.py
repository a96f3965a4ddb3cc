"""The fitted preprocessing of a run: featurizer, reshape, normalization, labels.

Saved as ``RUN_DIR/preprocessing.json``; ``Preprocessor.load`` replays it for
``predict`` / ``evaluate`` / export calibration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.atomic import write_json
from dlcli.data.featurize import Featurizer
from dlcli.errors import DataError, ShapeMismatchError

_EPS = 1e-7


class Preprocessor:
    def __init__(self, featurizer: Featurizer, reshape: list[int] | None, normalize: dict[str, Any], task: str):
        self.featurizer = featurizer
        self.reshape = reshape
        self.normalize = dict(normalize)  # method, axis, scale, offset (+ fitted stats)
        self.task = task
        self.labels: list[str] | None = None  # class names (classification)
        self.label_kind: str = "int"  # "int": labels are class ids; "str": names
        self.input_shape: list[int] = []
        self.input_dtype = "float32"
        self.fit_range: tuple[float, float] | None = None  # of the normalized examples fitted on (not saved)

    # ------------------------------------------------------------ fit
    def fit(self, raw_x: Any, raw_y: np.ndarray | None, class_names: list[str] | None,
            label_names: list[str] | None, featurizer_fitted: bool = False) -> Preprocessor:
        """Featurizer (unless ``featurizer_fitted``), then normalization on ``raw_x``; labels."""
        if not featurizer_fitted:
            self.featurizer.fit(raw_x)
        x = self._shape(self.featurizer.transform(raw_x))
        # integer features are token ids, unless they are to be normalized (e.g. uint8 pixels); text always ids
        ids = x.dtype.kind in "iu" and (self.normalize["method"] == "none" or self.featurizer.kind == "text")
        self.input_dtype = "int32" if ids else "float32"
        self.input_shape = list(x.shape[1:])
        if self.input_dtype == "float32":
            self._fit_norm(x.astype(np.float32))
            fitted = self.normalize_array(x.astype(np.float32))
            self.fit_range = (float(fitted.min()), float(fitted.max())) if fitted.size else (0.0, 1.0)
        if self.task == "classification":
            self._fit_labels(raw_y, class_names, label_names)
        return self

    def fit_featurizer(self, chunks) -> None:
        """The featurizer's vocabularies from raw ``chunks`` of the whole split (one pass)."""
        for raw in chunks:
            self.featurizer.fit_partial(raw)
        self.featurizer.fit_done()

    def fit_chunks(self, chunks, raw_y: np.ndarray | None, class_names: list[str] | None,
                   label_names: list[str] | None) -> Preprocessor:
        """Streamed sources: ``chunks`` of featurized examples (decoded images, parsed
        records); statistics accumulated chunk by chunk (in float64), so only one chunk is
        in memory at a time. Float32 inputs only."""
        moments = None
        for features in chunks:
            x = self._shape(np.asarray(features)).astype(np.float32, copy=False)
            if moments is None:
                self.input_shape, self.input_dtype = list(x.shape[1:]), "float32"
                moments = _Moments(self.normalize["axis"], x.ndim)
            moments.add(x)
        if moments is None:
            raise DataError("data: no training examples to fit the preprocessing on")
        m = self.normalize["method"]
        if m == "standard":
            self.normalize["mean"] = moments.mean.tolist()
            self.normalize["std"] = np.where(moments.std < _EPS, 1.0, moments.std).tolist()
        elif m == "minmax":
            self.normalize["min"] = moments.lo.tolist()
            self.normalize["range"] = np.where(moments.hi - moments.lo < _EPS, 1.0, moments.hi - moments.lo).tolist()
        ends = self.normalize_array(np.stack([moments.lo, moments.hi]).astype(np.float32))
        self.fit_range = (float(ends.min()), float(ends.max()))
        if self.task == "classification":
            self._fit_labels(raw_y, class_names, label_names)
        return self

    def _fit_norm(self, x: np.ndarray) -> None:
        m, axis = self.normalize["method"], self.normalize["axis"]
        if m in ("none", "rescale"):
            return
        axes = {"feature": (0,), "channel": tuple(range(x.ndim - 1)), "global": None}[axis]
        if m == "standard":
            self.normalize["mean"] = np.mean(x, axis=axes).tolist()
            std = np.std(x, axis=axes)
            self.normalize["std"] = np.where(std < _EPS, 1.0, std).tolist()
        elif m == "minmax":
            lo, hi = np.min(x, axis=axes), np.max(x, axis=axes)
            self.normalize["min"] = lo.tolist()
            self.normalize["range"] = np.where(hi - lo < _EPS, 1.0, hi - lo).tolist()

    def _fit_labels(self, y: np.ndarray | None, class_names, label_names) -> None:
        if y is None:
            raise DataError("data: classification needs labels, the data has none")
        ints = _as_int_labels(y)
        if ints is not None and class_names is None:
            self.label_kind = "int"
            if len(ints) and ints.min() < 0:
                raise DataError(f"data: labels must be class ids >= 0, found {int(ints.min())}")
            k = int(ints.max()) + 1 if len(ints) else 0
            names = label_names or [str(i) for i in range(k)]
            if len(names) < k:
                raise DataError(f"data.label_names: {len(names)} names but labels go up to {k - 1}")
            self.labels = list(names)
        else:
            self.label_kind = "str"
            found = sorted({str(v) for v in y})
            self.labels = list(class_names) if class_names else found
            if label_names:
                missing = [v for v in found if v not in label_names]
                if missing:
                    raise DataError(f"data.label_names: labels {missing[:5]} are not listed")
                self.labels = list(label_names)

    # ------------------------------------------------------------ transform
    def _shape(self, x: np.ndarray) -> np.ndarray:
        if not self.reshape:
            return x
        try:
            return x.reshape((x.shape[0], *self.reshape))
        except ValueError as exc:
            raise ShapeMismatchError(
                f"data.reshape: cannot reshape examples of shape {tuple(x.shape[1:])} "
                f"({int(np.prod(x.shape[1:]))} values) to {tuple(self.reshape)}"
            ) from exc

    def transform_x(self, raw_x: Any, normalize: bool = True) -> np.ndarray:
        """Raw records -> model input. ``normalize=False``: the featurizer's output only (no
        reshape, no normalization): what a model exported with its preprocessing is fed."""
        if not normalize:
            x = self.featurizer.transform(raw_x)
            return x.astype(np.int32) if self.input_dtype == "int32" else x.astype(np.float32)
        x = self._shape(self.featurizer.transform(raw_x))
        if self.input_shape and list(x.shape[1:]) != self.input_shape:
            raise ShapeMismatchError(
                f"input examples have shape {tuple(x.shape[1:])}, the model was trained on {tuple(self.input_shape)}"
            )
        if self.input_dtype == "int32":
            return x.astype(np.int32)
        return self.normalize_array(x.astype(np.float32))

    def normalize_array(self, x: np.ndarray) -> np.ndarray:
        n = self.normalize
        if n["method"] == "standard":
            return ((x - np.asarray(n["mean"], np.float32)) / np.asarray(n["std"], np.float32)).astype(np.float32)
        if n["method"] == "minmax":
            return ((x - np.asarray(n["min"], np.float32)) / np.asarray(n["range"], np.float32)).astype(np.float32)
        if n["method"] == "rescale":
            return (x * np.float32(n["scale"]) + np.float32(n["offset"])).astype(np.float32)
        return x

    def tf_example(self, x):
        """One featurized example -> the model's input, in the graph: the same reshape and
        normalization as :meth:`transform_x` (float32 arithmetic in the same order)."""
        import tensorflow as tf

        if self.reshape:
            x = tf.reshape(x, self.reshape)
        n = self.normalize
        if n["method"] == "standard":
            return (x - np.asarray(n["mean"], np.float32)) / np.asarray(n["std"], np.float32)
        if n["method"] == "minmax":
            return (x - np.asarray(n["min"], np.float32)) / np.asarray(n["range"], np.float32)
        if n["method"] == "rescale":
            return x * np.float32(n["scale"]) + np.float32(n["offset"])
        return x

    def encode_y(self, y: np.ndarray | None, split: str) -> np.ndarray:
        if self.task != "classification":
            if y is None:
                raise DataError(f"data: the {split} split has no targets")
            try:
                return np.asarray(y, dtype=np.float32)
            except ValueError as exc:
                raise DataError(f"data: {self.task} targets of the {split} split must be numbers") from exc
        assert self.labels is not None
        if self.label_kind == "int":
            ids = _as_int_labels(y)
            if ids is None:
                raise DataError(f"data: labels of the {split} split are not integer class ids")
            k = len(self.labels)
            bad = sorted({int(v) for v in ids if not 0 <= v < k})
            if bad:
                raise DataError(
                    f"data: the {split} split has class ids {bad[:5]} outside 0..{k - 1} (the classes of "
                    "the training split); list every class in data.label_names"
                )
            return ids.astype(np.int64)
        index = {name: i for i, name in enumerate(self.labels)}
        unknown = sorted({str(v) for v in y} - set(index))
        if unknown:
            raise DataError(f"data: the {split} split has labels not seen in training: {unknown[:5]}")
        return np.asarray([index[str(v)] for v in y], dtype=np.int64)

    # ------------------------------------------------------------ io
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "dlcli-preprocessing/1",
            "task": self.task,
            "input_shape": self.input_shape,
            "input_dtype": self.input_dtype,
            "featurizer": {"kind": self.featurizer.kind, **{k: v for k, v in self.featurizer.__dict__.items()}},
            "reshape": self.reshape,
            "normalize": self.normalize,
            "labels": self.labels,
            "label_kind": self.label_kind,
        }

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        if "inputs" in d and cls is Preprocessor:  # several named inputs
            from dlcli.data.inputs import MultiPreprocessor

            return MultiPreprocessor.from_dict(d)
        p = cls(Featurizer.from_dict(d["featurizer"]), d["reshape"], d["normalize"], d["task"])
        p.labels, p.label_kind = d["labels"], d["label_kind"]
        p.input_shape, p.input_dtype = d["input_shape"], d["input_dtype"]
        return p

    @classmethod
    def load(cls, path: Path) -> Preprocessor:
        """Read and check ``preprocessing.json`` (a hand-edited or damaged one is a DataError)."""
        try:
            pre = cls.from_dict(json.loads(Path(path).read_text()))
            pre.check()
            return pre
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise DataError(f"{path}: cannot read preprocessing: {type(exc).__name__}: {exc}") from exc

    def check(self) -> None:
        """Types and sizes that transform and export rely on (raises ValueError)."""
        parts = getattr(self, "parts", None)
        for part in (parts.values() if parts else [self]):
            shape, n = part.input_shape, part.normalize
            if not isinstance(shape, list) or not all(isinstance(d, int) and d > 0 for d in shape):
                raise ValueError(f"input_shape {shape!r} is not a list of positive sizes")
            if part.input_dtype not in ("float32", "int32"):
                raise ValueError(f"input_dtype {part.input_dtype!r} is not float32 or int32")
            if n.get("method") not in ("none", "standard", "minmax", "rescale"):
                raise ValueError(f"normalize.method {n.get('method')!r} is unknown")
            for key in ("mean", "std", "min", "range", "scale", "offset"):
                if key in n:
                    values = np.asarray(n[key], dtype=np.float64)  # ValueError for text
                    if not np.isfinite(values).all() or (key in ("std", "range") and (values <= 0).any()):
                        raise ValueError(f"normalize.{key} holds values that cannot normalize")
        if self.labels is not None and not (isinstance(self.labels, list) and all(isinstance(v, str) for v in self.labels)):
            raise ValueError("labels is not a list of class names")


class _Moments:
    """Sum, sum of squares, min and max over the normalization axes, added chunk by chunk."""

    def __init__(self, axis: str, ndim: int):
        self.axes = {"feature": (0,), "channel": tuple(range(ndim - 1)), "global": None}[axis]
        self.n, self.s, self.ss, self.lo, self.hi = 0, 0.0, 0.0, None, None

    def add(self, x: np.ndarray) -> None:
        x64 = x.astype(np.float64)
        self.n += x.size if self.axes is None else int(np.prod([x.shape[a] for a in self.axes]))
        self.s = self.s + x64.sum(axis=self.axes)
        self.ss = self.ss + np.square(x64).sum(axis=self.axes)
        lo, hi = x.min(axis=self.axes), x.max(axis=self.axes)
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.s / self.n)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(np.maximum(np.asarray(self.ss / self.n) - self.mean**2, 0.0))


def _as_int_labels(y: Any) -> np.ndarray | None:
    arr = np.asarray(y)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64)
    if arr.dtype.kind == "b":
        return arr.astype(np.int64)
    if arr.dtype.kind == "f":
        return arr.astype(np.int64) if np.all(np.mod(arr, 1) == 0) else None
    try:
        vals = [float(v) for v in arr]
    except (TypeError, ValueError):
        return None
    if all(v.is_integer() for v in vals):
        return np.asarray(vals, dtype=np.int64)
    return None

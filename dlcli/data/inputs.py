"""Several named inputs from one CSV (``data.inputs``): a preprocessing per input.

Each input is a list of columns with a type: ``numeric`` (floats, normalized as the
input or ``data.normalize`` says), ``categorical`` (one int id per column, 0 for a
category unseen in training) or ``text`` (one column, token ids). The model receives a
dict ``{input name: array}``; ``preprocessing.json`` holds one entry per input under
``inputs`` with its own fitted state, so a device can prepare each input the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dlcli.data.featurize import CategoryFeaturizer, Featurizer, TabularFeaturizer, TextFeaturizer
from dlcli.data.preprocess import Preprocessor
from dlcli.errors import DataError

_NO_NORM = {"method": "none", "axis": "feature", "scale": 1.0, "offset": 0.0}


def num_rows(x) -> int:
    """Examples in ``x``: an array, or a dict of arrays (one per input)."""
    return len(next(iter(x.values()))) if isinstance(x, dict) else len(x)


def concat_rows(parts: list):
    """Arrays (or dicts of arrays, one per input) of consecutive rows joined into one."""
    if parts and isinstance(parts[0], dict):
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return np.concatenate(parts)


def take_rows(x, index):
    """``x[index]`` for an array or for every array of a dict."""
    return {k: v[index] for k, v in x.items()} if isinstance(x, dict) else x[index]


class MultiPreprocessor(Preprocessor):
    """One :class:`Preprocessor` per named input; the labels are shared."""

    def __init__(self, parts: dict[str, Preprocessor], layout: dict[str, dict[str, Any]], task: str):
        super().__init__(Featurizer(), None, dict(_NO_NORM), task)
        self.parts = parts
        self.layout = layout  # name -> {"type": ..., "columns": [...]}
        self.input_shape = {n: p.input_shape for n, p in parts.items()}
        self.input_dtype = {n: p.input_dtype for n, p in parts.items()}

    @classmethod
    def from_spec(cls, spec, task: str, file: str) -> MultiPreprocessor:
        parts, layout = {}, {}
        for name, inp in spec.inputs.items():
            cols = [str(c) for c in inp.columns]
            if inp.type == "numeric":
                featurizer, norm = TabularFeaturizer(cols, [], file), (inp.normalize or spec.normalize).model_dump()
            elif inp.type == "categorical":
                featurizer, norm = CategoryFeaturizer(cols), dict(_NO_NORM)
            else:
                featurizer, norm = TextFeaturizer(inp.max_tokens, inp.sequence_length, inp.lowercase), dict(_NO_NORM)
            parts[name] = Preprocessor(featurizer, None, norm, "features")
            layout[name] = {"type": inp.type, "columns": cols}
        return cls(parts, layout, task)

    def _raw(self, name: str, raw: dict[str, list[str]]):
        cols = self.layout[name]["columns"]
        missing = [c for c in cols if c not in raw]
        if missing:
            raise DataError(f"input {name!r}: column(s) {', '.join(map(repr, missing))} missing "
                            f"(have: {', '.join(list(raw)[:12])})")
        return raw[cols[0]] if self.layout[name]["type"] == "text" else {c: raw[c] for c in cols}

    def fit(self, raw_x, raw_y, class_names, label_names, featurizer_fitted: bool = False) -> MultiPreprocessor:
        for name, part in self.parts.items():
            part.fit(self._raw(name, raw_x), None, None, None, featurizer_fitted)
        self.input_shape = {n: p.input_shape for n, p in self.parts.items()}
        self.input_dtype = {n: p.input_dtype for n, p in self.parts.items()}
        if self.task == "classification":
            self._fit_labels(raw_y, class_names, label_names)
        return self

    def fit_featurizer(self, chunks) -> None:
        for raw in chunks:
            for name, part in self.parts.items():
                part.featurizer.fit_partial(self._raw(name, raw))
        for part in self.parts.values():
            part.featurizer.fit_done()

    def transform_x(self, raw_x, normalize: bool = True) -> dict[str, np.ndarray]:
        return {name: part.transform_x(self._raw(name, raw_x), normalize) for name, part in self.parts.items()}

    def vocab_size(self, name: str) -> int | None:
        return getattr(self.parts[name].featurizer, "vocab_size", None)

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d["featurizer"] = {"kind": "inputs"}
        d["inputs"] = {n: {**self.layout[n], **p.to_dict()} for n, p in self.parts.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MultiPreprocessor:
        parts = {n: Preprocessor.from_dict(v) for n, v in d["inputs"].items()}
        layout = {n: {"type": v["type"], "columns": v["columns"]} for n, v in d["inputs"].items()}
        p = cls(parts, layout, d["task"])
        p.labels, p.label_kind = d["labels"], d["label_kind"]
        return p

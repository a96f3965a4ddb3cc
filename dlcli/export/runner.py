"""What every format's runtime wrapper offers: predict on NumPy, describe its I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class TensorInfo:
    name: str
    dtype: str
    shape: list[int | None]
    scale: float | None = None  # int8 / uint8 / int16 quantization
    zero_point: int | None = None

    def to_json(self) -> dict[str, Any]:
        d = {"name": self.name, "dtype": self.dtype, "shape": self.shape}
        if self.scale is not None:
            d.update(scale=self.scale, zero_point=self.zero_point)
        return d


@dataclass
class Runner:
    """An artifact loaded in its runtime. ``predict`` takes float (or id) inputs as the
    Keras model does and returns float outputs: (de)quantization happens inside."""

    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)

    def predict(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


QUANTIZED = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}  # dtype -> its range


def quantize(x: np.ndarray, info: TensorInfo) -> np.ndarray:
    if info.scale is None or info.dtype not in QUANTIZED:
        return x.astype(info.dtype) if info.dtype else x
    lo, hi = QUANTIZED[info.dtype]
    q = np.round(x / info.scale + info.zero_point)
    return np.clip(q, lo, hi).astype(info.dtype)


def dequantize(q: np.ndarray, info: TensorInfo) -> np.ndarray:
    if info.scale is None or info.dtype not in QUANTIZED:
        return q.astype(np.float32) if q.dtype != np.float32 else q
    return ((q.astype(np.float32) - info.zero_point) * info.scale).astype(np.float32)

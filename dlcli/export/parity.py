"""The parity gate: an artifact's outputs, in its real runtime, against the Keras model's.

Per output: max and mean absolute error. Classification: top-1 agreement and the test
accuracy with its drop (in accuracy points, 0.01 = 1 point). Regression and
reconstruction: the test MAE and its relative increase. GAN generators: the samples of fixed
latents, their mean absolute error relative to the Keras samples' standard deviation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

FLOAT_MAX_ABS = 1e-4
FLOAT16_MAX_ABS = 1e-2
QUANT_MIN_TOP1 = 0.98
QUANT_MAX_DROP = 0.01  # classification: accuracy points / 100
QUANT_MAX_REL_INCREASE = 0.10  # regression / reconstruction: relative MAE increase
QUANT_MAX_SAMPLE_ERROR = 0.10  # gan: the samples' mean abs error / the Keras samples' standard deviation


@dataclass
class Gate:
    max_abs_error: float | None = None
    min_top1_agreement: float | None = None
    max_metric_drop: float | None = None


def default_gate(quantization: str, task: str) -> Gate:
    if quantization == "none":
        return Gate(max_abs_error=FLOAT_MAX_ABS)
    if quantization == "float16":
        return Gate(max_abs_error=FLOAT16_MAX_ABS)
    if task == "classification":
        return Gate(min_top1_agreement=QUANT_MIN_TOP1, max_metric_drop=QUANT_MAX_DROP)
    if task == "gan":
        return Gate(max_metric_drop=QUANT_MAX_SAMPLE_ERROR)
    return Gate(max_metric_drop=QUANT_MAX_REL_INCREASE)


def resolve_gate(quantization: str, task: str, overrides) -> Gate:
    gate = default_gate(quantization, task)
    for key in ("max_abs_error", "min_top1_agreement", "max_metric_drop"):
        value = getattr(overrides, key, None) if overrides is not None else None
        if value is not None:
            setattr(gate, key, value)
    return gate


def task_metric(pred: np.ndarray, y: np.ndarray, task: str) -> tuple[str, float]:
    if task == "classification":
        return "accuracy", float(np.mean(pred.reshape(len(pred), -1).argmax(-1) == y.reshape(-1)))
    if task == "gan":  # y: the Keras generator's samples; the error relative to their spread
        return "sample_error", float(np.mean(np.abs(pred - y)) / max(float(np.std(y)), 1e-12))
    return "mae", float(np.mean(np.abs(pred.reshape(len(pred), -1) - y.reshape(len(y), -1))))


@dataclass
class Checks:
    samples: int
    output: str
    max_abs_error: float
    mean_abs_error: float
    metric: str
    keras_metric: float
    artifact_metric: float
    metric_drop: float
    top1_agreement: float | None = None
    saturation: dict[str, Any] | None = None  # int8 regression / reconstruction outputs (see check_saturation)
    gate: dict[str, Any] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed
        return d


def compare(ref: np.ndarray, got: np.ndarray, y: np.ndarray, task: str, gate: Gate, output: str,
            output_info: dict[str, Any] | None = None) -> Checks:
    """The parity checks of an artifact's outputs ``got`` against Keras's ``ref``.
    ``output_info``: the artifact's output tensor (a quantized one has ``scale`` and
    ``zero_point``: its range is checked for clipping, see :func:`check_saturation`)."""
    if got.shape != ref.shape:
        got = got.reshape(ref.shape) if got.size == ref.size else got
    if got.shape != ref.shape:
        c = Checks(len(ref), output, float("inf"), float("inf"), "", 0.0, 0.0, float("inf"), gate=asdict(gate))
        c.failures.append(f"output shape {got.shape} differs from the Keras model's {ref.shape}")
        return c
    diff = np.abs(ref.astype(np.float64) - got.astype(np.float64))
    name, k_metric = task_metric(ref, y, task)
    _, a_metric = task_metric(got, y, task)
    if task == "classification":
        drop = k_metric - a_metric
        top1 = float(np.mean(ref.reshape(len(ref), -1).argmax(-1) == got.reshape(len(got), -1).argmax(-1)))
    elif task == "gan":
        drop, top1 = a_metric - k_metric, None
    else:
        drop = (a_metric - k_metric) / max(k_metric, 1e-12)
        top1 = None
    c = Checks(len(ref), output, float(diff.max()), float(diff.mean()), name, k_metric, a_metric, float(drop), top1,
               gate=asdict(gate))
    if not np.all(np.isfinite(got)):
        c.failures.append("outputs contain NaN or inf")
    if gate.max_abs_error is not None and c.max_abs_error > gate.max_abs_error:
        c.failures.append(f"max abs error {c.max_abs_error:.3g} > {gate.max_abs_error:g}")
    if gate.min_top1_agreement is not None and top1 is not None and top1 < gate.min_top1_agreement:
        c.failures.append(f"top-1 agreement {top1:.4f} < {gate.min_top1_agreement:g}")
    if gate.max_metric_drop is not None and drop > gate.max_metric_drop:
        what = {"classification": "accuracy drop", "gan": "sample error (mean abs error / sample std)"}.get(
            task, "relative MAE increase")
        c.failures.append(f"{what} {drop:.4f} > {gate.max_metric_drop:g}")
    if task != "classification" and output_info and output_info.get("scale"):
        check_saturation(c, ref, got, float(output_info["scale"]), int(output_info["zero_point"]),
                         output_info.get("dtype", "int8"))
    return c


def check_saturation(c: Checks, ref: np.ndarray, got: np.ndarray, scale: float, zero_point: int,
                     dtype: str = "int8") -> None:
    """An int8 output can only say values in [(-128 - zp) * scale, (127 - zp) * scale], the
    range calibration saw (int16: -32768 .. 32767). Keras values beyond it by more than one
    step are clipped: a regression that reads 14.56 where the model says 14.75. Any clipped
    value fails."""
    from dlcli.export.runner import QUANTIZED

    qmin, qmax = QUANTIZED.get(dtype, QUANTIZED["int8"])
    lo, hi = (qmin - zero_point) * scale, (qmax - zero_point) * scale
    r = ref.astype(np.float64)
    clipped = (r > hi + scale) | (r < lo - scale)
    at_limits = (np.abs(got - hi) <= scale / 2) | (np.abs(got - lo) <= scale / 2)
    c.saturation = {"range": [round(lo, 6), round(hi, 6)], "at_limits": float(at_limits.mean()),
                    "clipped": int(clipped.sum()), "keras_min": float(r.min()), "keras_max": float(r.max())}
    if clipped.any():
        c.failures.append(
            f"{int(clipped.sum())} of {clipped.size} outputs lie beyond the {dtype} output range "
            f"[{lo:.4g}, {hi:.4g}] (Keras reaches {r.min():.4g} .. {r.max():.4g}) and are clipped: calibrate on "
            "data that reaches them (export.representative_samples, or wider training data)")

"""Which layers int8 hurts, and keeping the worst in float until the gate passes.

Per-layer errors come from TFLite's own QuantizationDebugger
(``tf.lite.experimental.QuantizationDebugger``): it runs the float and the int8 graph on the
calibration rows with NumericVerify ops after every quantized layer, and reports each
layer's error against its float result, given the same input. dlcli ranks layers by
``rmse / scale``: the error in quantization steps. Uniform rounding alone gives about
0.29 (1/sqrt(12)); TensorFlow's debugger guide treats layers above 0.7 as candidates to keep
in float, and so does dlcli (``SUSPECT_STEPS``).

Selective quantization uses the same debugger (``QuantizationDebugOptions(denylisted_nodes=
...)`` and ``get_nondebug_quantized_model()``): the listed layers run in float, everything
else in int8. Such a file takes and returns float (the boundary is inside the model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

SUSPECT_STEPS = 0.7  # rmse/scale above this: the layer loses more than rounding explains
DEBUG_ROWS = 64  # calibration rows the debugger runs (the first ones)


@dataclass
class LayerError:
    op: str
    tensor: str  # the layer's output tensor in the TFLite graph (names the Keras layers fused into it)
    rmse: float
    max_abs_error: float
    scale: float
    steps: float  # rmse / scale

    @property
    def suspect(self) -> bool:
        return self.steps > SUSPECT_STEPS

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "tensor": self.tensor, "rmse": _round(self.rmse),
                "max_abs_error": _round(self.max_abs_error), "scale": _round(self.scale),
                "rmse_over_scale": _round(self.steps), "suspect": self.suspect}


def _round(v: float) -> float | None:
    return float(f"{v:.4g}") if math.isfinite(v) else None


def _debugger(model, plan):
    import tensorflow as tf

    from dlcli.export.tflite import converter, representative_dataset

    conv, cleanup = converter(model, plan)
    try:
        return tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=representative_dataset(
            plan, limit=DEBUG_ROWS))
    finally:
        cleanup()


def layer_errors(dbg) -> list[LayerError]:
    """Every quantized layer's error, worst first (the debugger's own per-layer table)."""
    import csv
    import io

    dbg.run()
    buf = io.StringIO()
    dbg.layer_statistics_dump(buf)
    out = []
    for row in csv.DictReader(io.StringIO(buf.getvalue())):
        mse, scale = _float(row.get("mean_squared_error")), _float(row.get("scale"))
        rmse = math.sqrt(mse) if mse >= 0 else math.nan
        steps = rmse / scale if scale > 0 else math.nan
        out.append(LayerError(row.get("op_name", "?"), row.get("tensor_name", "?"), rmse,
                              _float(row.get("max_abs_error")), scale, steps))
    return sorted(out, key=lambda e: -e.steps if math.isfinite(e.steps) else 0.0)


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def selective_model(dbg, denylist: list[str]) -> bytes:
    """The calibrated model quantized with the layers whose output tensors are in ``denylist``
    left in float. The debugger's options are swapped on the one calibrated debugger (its
    constructor refuses a denylist that leaves no layer to verify, and calibrating again per
    step would cost a conversion each)."""
    import tensorflow as tf

    dbg._debug_options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=denylist)
    return dbg.get_nondebug_quantized_model()


def debug(model, plan) -> tuple[Any, list[LayerError]]:
    """The calibrated debugger of ``model`` under ``plan`` and its per-layer errors."""
    dbg = _debugger(model, plan)
    return dbg, layer_errors(dbg)


def auto_fallback(dbg, layers: list[LayerError], target, check, budget: int, log) -> tuple[dict, Any]:
    """Keep the worst layers in float, one more at a time (worst first), until ``check(path)``
    passes the gate or ``budget`` layers are in float (``fallback.keep_in_float``)."""
    from dlcli.export.fallback import keep_in_float
    from dlcli.latency import tflite as native

    # never every layer: a file with nothing quantized is the float model under another name
    ranked = [e for e in layers if math.isfinite(e.steps)][:min(budget, len(layers) - 1)]
    return keep_in_float(
        (([e.tensor], e.op, e.tensor) for e in ranked), target, budget=budget, check=check, log=log,
        build=lambda deny, path: path.write_bytes(selective_model(dbg, deny)),
        timer=lambda path: native(path, threads=1, warmup=10, runs=100),
        kind="layers", unit="layer(s)", describe=lambda deny, label: {"float_layers": len(deny), "layer": label})

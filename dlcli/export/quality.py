"""What an export says about its artifacts beyond the gate: the calibration rows, the
per-layer quantization error and the automatic fallback (int8 TFLite and ONNX), XNNPACK delegation,
ops left in float, quantization that did nothing; and a generator's fixed inputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlcli.recipe.schema import CALIBRATED

if TYPE_CHECKING:
    from dlcli.export import Artifact

MIN_CALIBRATION_ROWS = 100  # fewer representative rows than this gets a warning


def gan_inputs(run, n: int, offset: int):
    """``n`` fixed generator inputs of a GAN run (seeded by the recipe's seed + ``offset``)."""
    from dlcli.gan.scoring import latent_inputs

    return latent_inputs(run.recipe.model.gan, n, run.recipe.seed + offset, len(run.preprocessor.labels or []))


def calibration_report(y, task: str, labels: list[str] | None) -> dict[str, Any]:
    """How many rows calibrate the quantized files, and (classification) the classes they
    miss: ranges calibrated without a class can clip what only that class produces."""
    import numpy as np

    y = np.asarray(y)
    out: dict[str, Any] = {"rows": len(y), "warnings": []}
    if len(y) < MIN_CALIBRATION_ROWS:
        out["warnings"].append(f"quantization calibrated on {len(y)} rows, fewer than {MIN_CALIBRATION_ROWS}: "
                               "ranges the test data reaches may be clipped (raise export.representative_samples)")
    if task == "classification" and labels:
        ids = y.argmax(-1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(-1)
        missing = [labels[i] for i in sorted(set(range(len(labels))) - {int(v) for v in ids})]
        out["classes_missing"] = missing
        if missing:
            out["warnings"].append(f"the calibration rows hold no example of {len(missing)} class(es): "
                                   f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    return out


def _quant_debug(art: Artifact, target: Path, model, plan, spec, checks, gate_file, log):
    """int8 TFLite: per-layer errors (explain) and, when the gate failed and fallback is
    auto, the worst layers kept in float until it passes. Returns the checks of the file kept."""
    from dlcli.export.fallback import adopt
    from dlcli.export.sensitivity import auto_fallback, debug
    from dlcli.export.tflite import load

    log(f"measuring the quantization error of every layer of {art.name} ...")
    dbg, layers = debug(model, plan)
    art.sensitivity = [e.to_json() for e in layers]
    if checks.passed or spec.fallback != "auto":
        return checks
    record, fixed = auto_fallback(dbg, layers, target, gate_file, spec.fallback_budget, log)
    if not adopt(art, target, record, fixed, checks, spec.fallback_budget, "layer(s)"):
        return checks
    runner = load(target)
    art.inputs = [t.to_json() for t in runner.inputs]
    art.outputs = [t.to_json() for t in runner.outputs]
    art.warnings.append(f"--fallback auto kept {len(record['layers'])} layer(s) in float to pass the gate: "
                        + ", ".join(s["op"] for s in record["steps"]) + "; the file takes and returns float")
    return fixed


def _onnx_debug(art: Artifact, target: Path, plan, spec, checks, gate_file, log):
    """int8 ONNX: per-tensor SQNR from onnxruntime's QDQ debugging (explain) and, when the gate
    failed and fallback is auto, the worst nodes excluded from quantization until it passes."""
    from dlcli.export import onnx_fallback
    from dlcli.export.fallback import adopt

    floating = target.with_name("model.onnx")  # the float ONNX of the same export (its first job)
    if not floating.is_file():
        art.warnings.append("no float model.onnx beside it: per-node errors and fallback need it")
        return checks
    log(f"measuring the quantization error of every tensor of {art.name} ...")
    ranked = onnx_fallback.sensitivity(floating, target, plan.representative)
    art.sensitivity = [e.to_json() for e in ranked]
    if checks.passed or spec.fallback != "auto":
        return checks
    record, fixed = onnx_fallback.auto_fallback(floating, target, plan.representative, plan.onnx_calibration, ranked,
                                                gate_file, spec.fallback_budget, log)
    if not adopt(art, target, record, fixed, checks, spec.fallback_budget, "tensor(s)' nodes"):
        return checks
    art.warnings.append(f"--fallback auto kept {len(record['nodes'])} ONNX node(s) in float to pass the gate: "
                        + ", ".join(record["nodes"]))
    return fixed


def _inspect_tflite(art: Artifact, path: Path) -> None:
    """What a TFLite file holds beyond its outputs: XNNPACK delegation, the ops an int8 file
    runs in float, and whether a quantized file quantized anything at all."""
    from dlcli import mcu
    from dlcli.latency import delegation

    art.delegation = delegation(path)
    if art.quantization == "none":
        return
    info = mcu.inspect_model(path.read_bytes())
    if art.quantization in CALIBRATED:
        art.float_ops = mcu.float_ops(info)
        if art.float_ops and not (art.fallback or {}).get("passed"):  # a fallback's float ops are said already
            art.warnings.append(f"ops run in float inside the {art.quantization} model: {', '.join(art.float_ops)} "
                                "(dlcli validate RECIPE --target tflite-int8 names the recipe keys)")
    want = "FLOAT16" if art.quantization == "float16" else "INT8"
    if not info.constants.get(want):
        art.warnings.append(f"nothing was quantized: the file holds no {want.lower()} weights"
                            + (" (dynamic-range quantization leaves weight tensors under 1,024 values in float)"
                               if art.quantization == "dynamic" else ""))



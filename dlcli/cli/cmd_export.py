from __future__ import annotations

import sys
from pathlib import Path

import typer

from dlcli.cli.choices import choice, plain
from dlcli.cli.common import emit_json, handle_errors, native_quiet, quiet_frameworks, stdout_console
from dlcli.errors import RunDirError
from dlcli.recipe.schema import ExportSpec, FallbackMode


def latest_run(root: Path = Path("runs")) -> Path:
    """The most recently finished run under ``root``."""
    candidates = [p for p in root.glob("*/model.keras")] if root.is_dir() else []
    if not candidates:
        raise RunDirError(f"no RUN_DIR given and no finished run under {root}/ (train one, or name the run)")
    return max(candidates, key=lambda p: p.stat().st_mtime).parent


@handle_errors
def export(
    run_dir: Path = typer.Argument(None, help="A finished run (default: the most recent under ./runs)."),
    saved_model: bool = typer.Option(False, "--saved-model", help="Write a SavedModel."),
    tflite: bool = typer.Option(False, "--tflite", help="Write TFLite (LiteRT) models."),
    onnx: bool = typer.Option(False, "--onnx", help="Write an ONNX model."),
    all_: bool = typer.Option(False, "--all", help="All three formats."),
    quantize: choice(ExportSpec, "quantize") = typer.Option(None, "--quantize", "-q", help="TFLite quantization "
                                                            "(int16x8: 16-bit activations, 8-bit weights)."),
    representative_samples: int = typer.Option(None, "--representative-samples", min=1,
                                               help="Training examples that calibrate int8."),
    int8_float_fallback: bool = typer.Option(None, "--int8-float-fallback/--no-int8-float-fallback",
                                             help="Let ops without an int8 kernel run in float."),
    int8_per_channel: bool = typer.Option(None, "--int8-per-channel/--int8-per-tensor",
                                          help="int8 weight scales per channel (default) or per tensor (smaller)."),
    opset: int = typer.Option(None, "--opset", min=9, help="ONNX opset."),
    onnx_quantize: choice(ExportSpec, "onnx_quantize") = typer.Option(None, "--onnx-quantize", help="int8: also write model_int8.onnx, "
                                      "statically quantized by onnxruntime; dynamic: model_dynamic.onnx, int8 "
                                      "weights (export.onnx_quantize)."),
    onnx_calibration: choice(ExportSpec, "onnx_calibration") = typer.Option(
        None, "--onnx-calibration", help="ONNX int8 calibration (default minmax; export.onnx_calibration)."),
    explain: bool = typer.Option(None, "--explain/--no-explain", help="int8 TFLite: measure and show every "
                                 "layer's quantization error (export.explain)."),
    fallback: FallbackMode = typer.Option(None, "--fallback", help="int8 TFLite failing its gate: auto keeps the "
                                          "worst layers in float until it passes (export.fallback)."),
    fallback_budget: int = typer.Option(None, "--fallback-budget", min=1, help="Most layers --fallback auto may "
                                        "keep in float (export.fallback_budget)."),
    out: Path = typer.Option(None, "--out", "-o", help="Output folder (default: RUN_DIR/export)."),
    max_abs_error: float = typer.Option(None, "--max-abs-error", min=0.0, help="Gate: largest |artifact - Keras|."),
    min_top1_agreement: float = typer.Option(None, "--min-top1-agreement", min=0.0, max=1.0,
                                             help="Gate: least top-1 agreement."),
    max_metric_drop: float = typer.Option(None, "--max-metric-drop", min=0.0, help="Gate: largest metric drop."),
    include_preprocessing: bool = typer.Option(
        None, "--include-preprocessing/--separate-preprocessing",
        help="Bake the fitted reshape and normalization into the models (a device feeds raw values)."),
    decoder: bool = typer.Option(False, "--decoder", help="A VAE run: export its decoder (latent vectors in, new "
                                 "examples out) into RUN_DIR/export/decoder, gated on fixed latents."),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest as one JSON object."),
) -> None:
    """Export a run to SavedModel / TFLite / ONNX and check every artifact in its real runtime.

    Exit code 6 when an artifact fails its parity gate (it is kept, marked failed)."""
    quiet_frameworks()
    from dlcli.export import export_run

    if run_dir is None:
        run_dir = latest_run()
        print(f"using the most recent run: {run_dir}", file=sys.stderr)
    formats = [f for f, on in (("saved_model", saved_model), ("tflite", tflite), ("onnx", onnx)) if on or all_]
    with native_quiet() as err:
        log = (lambda msg: None) if json_out else (lambda msg: print(msg, file=err, flush=True))
        result = export_run(run_dir, formats or None, plain(quantize), out, log=log, part="decoder" if decoder else None,
                            representative_samples=representative_samples, opset=opset,
                            gate=_gate(max_abs_error, min_top1_agreement, max_metric_drop),
                            int8_float_fallback=int8_float_fallback, int8_per_channel=int8_per_channel,
                            include_preprocessing=include_preprocessing, onnx_quantize=plain(onnx_quantize),
                            onnx_calibration=plain(onnx_calibration), explain=explain, fallback=plain(fallback),
                            fallback_budget=fallback_budget)
    _render(result, json_out, bool(explain))
    result.raise_for_failures()


def _gate(max_abs_error, min_top1_agreement, max_metric_drop):
    """The gate flags as a GateSpec (None: the defaults of each format and quantization)."""
    from dlcli.recipe.schema import GateSpec

    if all(v is None for v in (max_abs_error, min_top1_agreement, max_metric_drop)):
        return None
    return GateSpec(max_abs_error=max_abs_error, min_top1_agreement=min_top1_agreement,
                    max_metric_drop=max_metric_drop)


def _render(result, json_out: bool, explain: bool) -> None:
    """The manifest (--json) or the table and per-layer errors; warnings on stderr after them."""
    if json_out:
        emit_json(result.manifest())
    else:
        _table(result)
        for a in result.artifacts:
            if a.sensitivity is not None and (explain or a.fallback):
                _layers(a)
    for w in (result.calibration or {}).get("warnings", []):
        print(f"warning: {w}", file=sys.stderr)
    for a in result.artifacts:  # what a quantized file did not do
        for w in a.warnings:
            print(f"warning: {a.name}: {w}", file=sys.stderr)


def _table(result) -> None:
    from rich.table import Table

    ref = next((a.size_bytes for a in result.artifacts if a.name == "model_float32.tflite" and a.size_bytes), None)
    metric = result.keras["metric"]
    t = Table(title=f"{result.out_dir}", title_justify="left")
    t.add_column("artifact", no_wrap=True)
    for col in ("size", "ratio", "max err", "top-1", metric):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("gate", no_wrap=True)
    t.add_row("keras model", "", "", "", "", f"{result.keras['value']:.4f}", "reference")
    for a in result.artifacts:
        c = a.checks
        t.add_row(
            a.name, _size(a.size_bytes) if a.size_bytes else "-",
            f"{a.size_bytes / ref:.2f}x" if ref and a.size_bytes else "-",
            f"{c['max_abs_error']:.1e}" if c else "-",
            f"{c['top1_agreement']:.3f}" if c and c.get("top1_agreement") is not None else "-",
            f"{c['artifact_metric']:.4f}" if c else "-",
            "[green]pass[/]" if a.status == "passed" else "[red]FAIL[/]",
        )
    stdout_console().print(t)


def _layers(a) -> None:
    if a.format == "onnx":
        return _nodes(a)
    from rich.table import Table

    kept = set((a.fallback or {}).get("layers", []))
    t = Table(title=f"{a.name}: quantization error per layer (rmse in quantization steps; rounding alone "
              "is about 0.29)", title_justify="left")
    for col in ("op", "output tensor", "rmse/scale", "max err", "scale", ""):
        t.add_column(col, justify="right" if col in ("rmse/scale", "max err", "scale") else "left")
    for e in a.sensitivity:
        mark = "kept in float" if e["tensor"] in kept else ("suspect" if e["suspect"] else "")
        t.add_row(e["op"], e["tensor"][-60:], _g(e["rmse_over_scale"]), _g(e["max_abs_error"]), _g(e["scale"]), mark)
    stdout_console().print(t)


def _nodes(a) -> None:
    """int8 ONNX: each tensor's SQNR (dB, higher is better), worst first (the first 20)."""
    from rich.table import Table

    kept = set((a.fallback or {}).get("nodes", []))
    t = Table(title=f"{a.name}: quantization noise per tensor (SQNR in dB, worst first; onnxruntime's QDQ "
              "debugging)", title_justify="left")
    for col in ("op", "tensor", "own QDQ", "worst channel", "vs float model", ""):
        t.add_column(col, justify="left" if col in ("op", "tensor", "") else "right")
    for e in a.sensitivity[:20]:
        mark = "kept in float" if kept & set(e["nodes"]) else ""
        t.add_row(e["op"], e["tensor"][-60:], _g(e["qdq_sqnr_db"]), _g(e.get("channel_sqnr_db")),
                  _g(e["model_sqnr_db"]), mark)
    stdout_console().print(t)


def _g(v) -> str:
    return "-" if v is None else f"{v:.3g}"


def _size(n: int) -> str:
    return f"{n / 1024:.1f}k" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f}M"

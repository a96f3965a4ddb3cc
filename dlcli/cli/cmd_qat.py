from __future__ import annotations

from pathlib import Path

import typer

from dlcli.cli import options
from dlcli.cli.common import emit_json, handle_errors, native_quiet, quiet_frameworks, stdout_console


@handle_errors
def qat(
    run_dir: Path = typer.Argument(..., help="A finished run to fine-tune with fake quantization."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Fine-tuning epochs (default 3)."),
    learning_rate: float = typer.Option(None, "--learning-rate", help="Fine-tuning rate (default: training rate / 10)."),
    exclude: list[str] = typer.Option(None, "--exclude", help="Layer name to leave in float; repeatable."),
    per_channel: bool = typer.Option(None, "--per-channel/--per-tensor", help="Conv2D / DepthwiseConv2D kernel "
                                     "scales per channel (default) or per tensor (then export with --int8-per-tensor)."),
    out: Path = typer.Option(None, "--run-dir", "-o", help="New run directory (default: RUN_DIR-qat)."),
    set_: list[str] = options.SOURCE_SET,
    overwrite: bool = options.OVERWRITE,
    resume: bool = options.RESUME,
    json_out: bool = options.JSON,
    quiet: bool = options.QUIET,
) -> None:
    """Quantization-aware training (Keras 3, no tfmot) into a new run.

    Fine-tunes with int8 fake-quantization of the Dense / Conv / DepthwiseConv kernels and
    outputs (BatchNorm folded, ReLU fused); export the new run with `--quantize int8` and
    the converter uses the ranges learned here."""
    quiet_frameworks()
    from dlcli.compress.qat import qat as qat_fn

    with native_quiet():
        res = qat_fn(run_dir, out, epochs=epochs, learning_rate=learning_rate, exclude=exclude or None,
                     per_channel=per_channel,
                     overwrite=overwrite, resume=resume, overrides=set_ or None,
                     progress="none" if (json_out or quiet) else "plain")
    if json_out:
        emit_json(res.to_json())
        return
    console = stdout_console()
    plan = res.plan
    console.print(f"{res.run_dir}  (quantization-aware from {res.source})")
    console.print(f"fake-quantized: {', '.join(plan['quantized'])}")
    if plan["folded_batch_norm"]:
        console.print("batch norm folded: " + ", ".join(f"{bn} -> {q}" for q, bn in plan["folded_batch_norm"].items()))
    if plan["float_layers"]:
        console.print(f"left in float: {', '.join(plan['float_layers'])}")
    split = "test" if "test" in res.metrics else "train"
    console.print(f"{split}: " + "  ".join(f"{k} {v:.4f} (float {res.float_metrics[split][k]:.4f})"
                                          for k, v in res.metrics[split].items() if k in res.float_metrics[split]))
    tail = "" if plan.get("per_channel", True) else " --int8-per-tensor"
    console.print(f"next: dlcli export {res.run_dir} --quantize int8{tail}")

from __future__ import annotations

from pathlib import Path

import typer

from dlcli.cli.common import emit_json, handle_errors, native_quiet, quiet_frameworks


@handle_errors
def evaluate(
    run_dir: Path = typer.Argument(..., help="A finished run directory."),
    split: str = typer.Option("test", "--split", help="train, validation or test."),
    artifact: Path = typer.Option(None, "--artifact", help="Evaluate an exported artifact (.tflite, .onnx, SavedModel) "
                                  "in its runtime instead of the Keras model."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
    allow_code: bool = typer.Option(False, "--allow-code", help="Allow a SavedModel that dlcli did not export "
                                    "(it runs its own graph)."),
) -> None:
    """Evaluate a run's model (or an exported artifact) on a split, with the training preprocessing."""
    quiet_frameworks()
    from dlcli.evaluate import evaluate as evaluate_fn
    from dlcli.evaluate import evaluate_artifact

    with native_quiet():
        res = evaluate_artifact(run_dir, artifact, split, allow_code) if artifact else evaluate_fn(run_dir, split)
    if json_out:
        emit_json(res.to_json())
        return
    if res.data_changed:
        typer.echo("warning: the data changed since training (fingerprint differs)", err=True)
    typer.echo(f"{split} ({res.examples} examples): " + "  ".join(f"{k} {v:.4f}" for k, v in res.metrics.items()))

from __future__ import annotations

from pathlib import Path

import typer

from dlcli.cli.choices import choice, plain
from dlcli.cli.common import emit_json, handle_errors, progress_mode, quiet_frameworks, stderr_console
from dlcli.recipe.train import TrainSpec


@handle_errors
def train(
    recipe: Path = typer.Argument(..., help="Recipe file."),
    run_dir: Path = typer.Option(None, "--run-dir", "-o", help="Run directory (default: runs/NAME-TIMESTAMP)."),
    set_: list[str] = typer.Option([], "--set", help="Override KEY.PATH=VALUE (YAML scalar); repeatable."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object on stdout; logs go to stderr."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="One plain line per epoch, no progress bar."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run directory."),
    resume: bool = typer.Option(False, "--resume", help="Continue the interrupted run in --run-dir from its last "
                                "checkpoint (an interrupted run of the same recipe is resumed even without it)."),
    strategy: choice(TrainSpec, "strategy") = typer.Option(None, "--strategy", help="tf.distribute strategy "
                                                           "(overrides train.strategy)."),
    allow_code: bool = typer.Option(False, "--allow-code", help="Allow `model.code` to import and run user code."),
    require_tracking: bool = typer.Option(False, "--require-tracking", help="An unreachable or failing MLflow "
                                          "tracker stops the run (exit 11) instead of a warning."),
) -> None:
    """Train a recipe into a run directory."""
    from dlcli.recipe.loader import load_recipe

    r = load_recipe(recipe, [*set_, *([f"train.strategy={plain(strategy)}"] if strategy else [])])
    quiet_frameworks()
    from dlcli.cli.common import native_quiet
    from dlcli.train import train as train_fn

    console = stderr_console()
    def log(msg: str) -> None:  # on stderr, also with --json (stdout holds only the JSON object)
        console.print(msg, markup=False, highlight=False, soft_wrap=True)

    # native converter / runtime noise of the export stage stays off the terminal
    from dlcli.tracking import REQUIRE

    REQUIRE.set(require_tracking)
    result = train_fn(r, run_dir, overwrite=overwrite, resume=resume, allow_code=allow_code,
                      progress=progress_mode(quiet, json_out), console=console, log=log, quiet_native=native_quiet)
    pipeline = result.pipeline
    if not result.chief:  # another worker of a multi-worker run: the chief reports and writes
        if json_out:
            emit_json(result.to_json())
        else:
            console.print(f"worker done ({result.epochs_run} epochs); the chief wrote the run directory",
                          markup=False, highlight=False)
        return
    if json_out:
        emit_json(result.to_json())
        if pipeline and pipeline.export is not None:
            pipeline.export.raise_for_failures()
        return
    test = result.metrics.get("test") or result.metrics.get("validation") or result.metrics["train"]
    summary = "  ".join(f"{k} {v:.4f}" for k, v in test.items())
    split = "test" if "test" in result.metrics else ("validation" if "validation" in result.metrics else "train")
    kept = (f"; early stopping kept the weights of epoch {result.kept_epoch}"
            if result.kept_epoch is not None and result.kept_epoch != result.epochs_run else "")
    console.print(f"[bold]trained[/] {r.name} in {result.duration_s:.1f}s ({result.epochs_run} epochs{kept}) "
                  f"-> {result.run_dir}")
    typer.echo(f"{split}: {summary}")
    if pipeline:
        _pipeline_table(pipeline)
        if pipeline.export is not None:
            pipeline.export.raise_for_failures()


def _pipeline_table(pipeline) -> None:
    from rich.table import Table

    from dlcli.cli.common import stdout_console

    t = Table(title="pipeline", title_justify="left")
    for col in ("stage", "parameters", "sparsity", "model.keras", "gzip", "metric"):
        t.add_column(col, justify="left" if col == "stage" else "right")
    for s in pipeline.stages:
        t.add_row(s.name, f"{s.parameters:,}", f"{s.sparsity:.3f}", f"{s.model_bytes:,}", f"{s.model_gzip_bytes:,}",
                  f"{s.metric} {s.value:.4f}")
    if pipeline.export is not None:
        for a in pipeline.export.artifacts:
            metric = a.checks.get("artifact_metric")
            t.add_row(f"export {a.name}", "", "", f"{a.size_bytes:,}", "",
                      (f"{pipeline.export.keras['metric']} {metric:.4f} " if metric is not None else "")
                      + ("pass" if a.status == "passed" else "FAIL"))
    stdout_console().print(t)

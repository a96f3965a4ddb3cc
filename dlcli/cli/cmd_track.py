from __future__ import annotations

from pathlib import Path

import typer

from dlcli.cli.common import emit_json, handle_errors, stderr_console


@handle_errors
def track(
    run_dir: Path = typer.Argument(..., help="A completed run directory."),
    uri: str = typer.Option(None, "--uri", help="MLflow tracking URI (default: the recipe's tracking.uri, "
                            "else MLFLOW_TRACKING_URI)."),
    experiment: str = typer.Option(None, "--experiment", help="Experiment name (default: the recipe's, else "
                                   "its name)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Log a completed run to MLflow afterwards (its tracker was unreachable, or the recipe had
    no tracking: section): parameters, every epoch, final metrics, model, export, benchmark, report.

    A run already logged is left as it is. Exit 11 when the server cannot be reached."""
    from dlcli.tracking import track_run

    console = stderr_console()
    run_id = track_run(run_dir, uri=uri, experiment=experiment,
                       log=lambda m: console.print(m, markup=False, highlight=False, soft_wrap=True))
    if json_out:
        emit_json({"run_dir": str(run_dir), "run_id": run_id})
    else:
        typer.echo(f"{run_dir}: MLflow run {run_id}")

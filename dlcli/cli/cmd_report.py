from __future__ import annotations

import sys
from pathlib import Path

import typer

from dlcli.cli.common import emit_json, handle_errors, native_quiet, quiet_frameworks


@handle_errors
def report(
    run_dir: Path = typer.Argument(..., help="A run directory (finished or not)."),
    out: Path = typer.Option(None, "--out", "-o", help="HTML file to write (default: RUN_DIR/report.html); "
                             "the PNGs go to <stem>_files/ beside it."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object: the HTML and PNG paths."),
) -> None:
    """Write one self-contained HTML report of a run: curves, test-set results, export and benchmark tables.

    Missing optional files (history, export manifest, benchmark) become notes in the report."""
    quiet_frameworks()
    from dlcli.report import build_report

    with native_quiet():
        res = build_report(run_dir, out)
    if json_out:
        emit_json(res.to_json())
        return
    for note in res.notes:
        print(f"note: {note}", file=sys.stderr)
    typer.echo(f"report: {res.html}")
    for path in res.images:
        typer.echo(f"  {path}")

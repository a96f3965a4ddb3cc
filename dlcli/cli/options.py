"""Options that several commands share, written once (Typer reads an option's settings
without changing them, so one ``typer.Option`` may type many commands' parameters)."""

from __future__ import annotations

import typer

JSON = typer.Option(False, "--json", help="Print one JSON object.")
QUIET = typer.Option(False, "--quiet", help="No per-epoch lines.")
OVERWRITE = typer.Option(False, "--overwrite", help="Replace an existing output run.")
RESUME = typer.Option(False, "--resume", help="Continue an interrupted run in --run-dir (rerunning the same "
                      "command resumes it too).")
SOURCE_SET = typer.Option([], "--set", help="Override a key of the source run's recipe for fine-tuning, "
                          "KEY.PATH=VALUE (e.g. train.batch_size=64); repeatable.")

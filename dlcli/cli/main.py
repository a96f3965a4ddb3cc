"""``dlcli``: composes the commands. Each command lives in its own module."""

from __future__ import annotations

import typer

from dlcli import __version__
from dlcli.cli import (
    cmd_benchmark,
    cmd_distill,
    cmd_doctor,
    cmd_evaluate,
    cmd_export,
    cmd_init,
    cmd_package,
    cmd_predict,
    cmd_prune,
    cmd_qat,
    cmd_report,
    cmd_schema,
    cmd_track,
    cmd_train,
    cmd_tune,
    cmd_validate,
)
from dlcli.cli.choices import OneLineErrors
from dlcli.cli.common import STATE

app = typer.Typer(
    name="dlcli",
    cls=OneLineErrors,
    help="YAML recipes to trained Keras 3 models, exported and verified for devices.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dlcli {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks and framework logs."),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """dlcli: train, export, verify and package Keras models from YAML recipes."""
    STATE["debug"] = debug


app.command("validate")(cmd_validate.validate)
app.command("schema")(cmd_schema.schema)
app.command("init")(cmd_init.init)
app.command("train")(cmd_train.train)
app.command("export")(cmd_export.export)
app.command("prune")(cmd_prune.prune)
app.command("distill")(cmd_distill.distill)
app.command("qat")(cmd_qat.qat)
app.command("evaluate")(cmd_evaluate.evaluate)
app.command("benchmark")(cmd_benchmark.benchmark)
app.add_typer(cmd_package.package_app, name="package")
app.command("report")(cmd_report.report)
app.command("doctor")(cmd_doctor.doctor)
app.command("predict")(cmd_predict.predict)
app.command("track")(cmd_track.track)
app.command("tune")(cmd_tune.tune)


def run() -> None:  # console-script entry point
    app()

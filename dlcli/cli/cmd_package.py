"""``dlcli package RUN_DIR --target T --out FILE`` and ``dlcli package verify FILE``.

A Typer sub-app whose group runs ``build`` when the first word is not a subcommand name,
so both spellings work: ``dlcli package RUN_DIR ...`` and ``dlcli package build RUN_DIR ...``.
(A group callback with a positional RUN_DIR would swallow the word ``verify``.)
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from pathlib import Path

import typer
from typer.core import TyperGroup

from dlcli.cli.common import emit_json, handle_errors, native_quiet, quiet_frameworks


@contextlib.contextmanager
def _progress_stream(silent: bool):
    """Where progress lines go: a copy of stderr taken before native_quiet() points fd 2 at
    /dev/null (sys.stderr itself when it has no file descriptor, as under CliRunner)."""
    if silent:
        with open(os.devnull, "w") as devnull:
            yield devnull
        return
    try:
        fd = os.dup(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        yield sys.stderr
        return
    with os.fdopen(fd, "w") as stream:
        yield stream


class DefaultCommandGroup(TyperGroup):
    """A group that dispatches to ``build`` unless the first argument names a subcommand."""

    default_command = "build"

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


package_app = typer.Typer(
    cls=DefaultCommandGroup,
    no_args_is_help=True,
    subcommand_metavar="RUN_DIR --target T --out FILE.zip | verify FILE.zip",
    help="Zip a verified artifact with its preprocessing, labels, checksums and an inference example; "
    "verify such an archive. `dlcli package RUN_DIR --target T --out FILE.zip` builds "
    "(same as `dlcli package build ...`).",
)


@package_app.command("build")
@handle_errors
def build(
    run_dir: Path = typer.Argument(..., help="A finished run; its artifact is exported first if RUN_DIR/export lacks it."),
    target: str = typer.Option(..., "--target", "-t", help="tflite, tflite-int8, onnx, onnx-int8, saved_model or mcu."),
    out: Path = typer.Option(..., "--out", "-o", help="The archive to write (.zip; replaced atomically)."),
    decoder: bool = typer.Option(False, "--decoder", help="A VAE run: package its decoder (latent vectors in, "
                                 "new examples out; RUN_DIR/export/decoder, exported first if missing)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Package a run's artifact for one target into a zip archive.

    Exit code 6 when the artifact failed its parity gate, 2 when an mcu model is not full-integer."""
    from dlcli.package import build_package, get_target

    get_target(target)  # an unknown target fails before TensorFlow loads
    quiet_frameworks()
    with _progress_stream(json_out) as stream, native_quiet():
        result = build_package(run_dir, target, out, log=lambda msg: print(msg, file=stream, flush=True),
                               part="decoder" if decoder else None)
    if json_out:
        emit_json(result.to_json())
        return
    size = result.size_bytes / 1024
    typer.echo(f"wrote {result.path} ({result.target}: {result.model}, {len(result.files)} files + manifest.json, "
               f"{size:.1f} kB, sha256 {result.sha256})")
    if result.arena:
        typer.echo(f"tensor arena: {result.arena['recommended_bytes']} bytes "
                   f"(measured {result.arena['measured_bytes']} in TFLite Micro)")


@package_app.command("verify")
@handle_errors
def verify(
    archive: Path = typer.Argument(..., help="A package written by `dlcli package`."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (also when verification fails)."),
) -> None:
    """Recompute every checksum against manifest.json without extracting anything.

    Exit code 8 for a changed byte, a missing or extra file, an absolute or '..' entry, or a link."""
    from dlcli.package import verify_package

    result = verify_package(archive)
    if json_out:
        emit_json(result.to_json())
    elif result.valid:
        typer.echo(f"ok: {result.path}: {result.files} files match manifest.json "
                   f"(target {result.target}, model {result.model})")
    result.raise_for_problems()

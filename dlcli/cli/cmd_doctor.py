from __future__ import annotations

import contextlib

import typer

from dlcli.cli.common import emit_json, handle_errors, native_quiet, quiet_frameworks, stdout_console


@handle_errors
def doctor(
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Check the installed stack: versions, devices, and known-bad combinations (with the fix).

    Exit code 2 when a problem is flagged as an error; warnings and notes keep exit code 0."""
    with contextlib.suppress(Exception):  # a broken TensorFlow is reported by the diagnosis, not here
        quiet_frameworks()
    from dlcli.doctor import doctor as doctor_fn

    with native_quiet():
        diag = doctor_fn()
    if json_out:
        emit_json(diag.to_json())
    else:
        _render(diag)
    diag.raise_for_errors()


def _render(diag) -> None:
    from rich.table import Table

    from dlcli.doctor import PACKAGES, installed_as

    console = stdout_console()
    t = Table(title="dlcli doctor", title_justify="left")
    t.add_column("package", no_wrap=True)
    t.add_column("version", no_wrap=True)
    t.add_column("distribution", no_wrap=True)
    t.add_row("python", diag.python, "")
    for label, names in PACKAGES.items():
        found = installed_as(diag.distributions, names)
        t.add_row(label, found[1] if found else "[dim]not installed[/dim]",
                  found[0] if found and found[0] != label else "")
    for extra in ("tf-keras", "tensorflow-model-optimization"):
        if extra in diag.distributions:
            t.add_row(extra, diag.distributions[extra], "")
    console.print(t)
    devices = ", ".join(f"{d['type']} ({d['name']})" for d in diag.devices) or "none listed"
    console.print(f"devices: {devices}")
    if diag.environment:
        console.print("environment: " + "  ".join(f"{k}={v}" for k, v in diag.environment.items()))
    if not diag.problems:
        console.print("[green]no problems found[/green]")
        return
    style = {"error": "bold red", "warning": "yellow", "info": "cyan"}
    p = Table(show_header=True, title="findings", title_justify="left")
    p.add_column("level", no_wrap=True)
    p.add_column("problem")
    p.add_column("fix")
    for prob in diag.problems:
        p.add_row(f"[{style[prob.level]}]{prob.level}[/{style[prob.level]}]", prob.message, prob.fix)
    console.print(p)

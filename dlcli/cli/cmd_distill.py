from __future__ import annotations

from pathlib import Path

import typer

from dlcli.cli import options
from dlcli.cli.common import emit_json, handle_errors, native_quiet, quiet_frameworks, stdout_console


@handle_errors
def distill(
    teacher_run: Path = typer.Argument(..., help="The trained teacher run."),
    student_recipe: Path = typer.Argument(..., help="A recipe whose model is the student (its train section is used)."),
    temperature: float = typer.Option(None, "--temperature", "-T", help="Softmax temperature (default 3)."),
    alpha: float = typer.Option(None, "--alpha", help="Weight of the distillation loss in [0, 1] (default 0.5)."),
    out: Path = typer.Option(None, "--run-dir", "-o", help="New run directory (default: STUDENT-distilled beside the teacher)."),
    set_: list[str] = typer.Option([], "--set", help="Override a student recipe key KEY.PATH=VALUE; repeatable."),
    overwrite: bool = options.OVERWRITE,
    allow_code: bool = typer.Option(False, "--allow-code", help="Allow a `model.code` student."),
    json_out: bool = options.JSON,
) -> None:
    """Knowledge distillation into a smaller student model.

    Reports the distilled student beside the same student trained alone and the teacher."""
    from dlcli.recipe.loader import load_recipe

    student = load_recipe(student_recipe, set_)
    quiet_frameworks()
    from dlcli.compress.distill import distill as distill_fn

    with native_quiet():
        res = distill_fn(teacher_run, student, out, temperature=temperature, alpha=alpha, overwrite=overwrite,
                         allow_code=allow_code, progress="none")
    if json_out:
        emit_json(res.to_json())
        return
    from rich.table import Table

    split = "test" if "test" in res.teacher else "train"
    t = Table(title=f"{res.run_dir}  (T={res.temperature:g}, alpha={res.alpha:g})", title_justify="left")
    t.add_column("model")
    t.add_column("parameters", justify="right")
    for k in res.teacher[split]:
        t.add_column(f"{split} {k}", justify="right")
    for name, metrics, params in (("teacher", res.teacher, res.parameters["teacher"]),
                                  ("student alone", res.student_alone, res.parameters["student"]),
                                  ("student distilled", res.distilled, res.parameters["student"])):
        t.add_row(name, f"{params:,}", *[f"{metrics[split].get(k, float('nan')):.4f}" for k in res.teacher[split]])
    stdout_console().print(t)

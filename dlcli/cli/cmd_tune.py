from __future__ import annotations

from pathlib import Path

import typer

from dlcli.cli.common import emit_json, handle_errors, stderr_console


@handle_errors
def tune(
    recipe: Path = typer.Argument(..., help="Recipe file with a tune: section."),
    out: Path = typer.Option(None, "--out", "-o", help="Study folder (default: runs/NAME-tune); an existing "
                             "study there is continued."),
    trials: int = typer.Option(None, "--trials", min=1, help="Trials in the study (overrides tune.trials)."),
    timeout_minutes: float = typer.Option(None, "--timeout-minutes", min=0.01, help="Start no trial after this "
                                          "long (overrides tune.timeout_minutes)."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, max=64, help="Worker processes sharing the study."),
    select: str = typer.Option(None, "--select", help="Pick the trial for best.yaml, e.g. "
                               "\"accuracy>=0.98, min int8_latency_ms\" (default: the best, or the front's best "
                               "first objective)."),
    set_: list[str] = typer.Option([], "--set", help="Override KEY.PATH=VALUE in the recipe; repeatable."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object (tune.json) on stdout."),
    allow_code: bool = typer.Option(False, "--allow-code", help="Allow `model.code` to import and run user code."),
    require_tracking: bool = typer.Option(False, "--require-tracking", help="An unreachable MLflow tracker "
                                          "stops the search (exit 11)."),
) -> None:
    """Search a recipe's keys with Optuna; every trial is a run directory, the study a SQLite file.

    Killed, it continues where it stopped when run again with the same --out (a trial cut short
    resumes from its checkpoint). Writes OUT/tune.json and OUT/best.yaml (dlcli train accepts it)."""
    from dlcli.cli.common import native_quiet, quiet_frameworks
    from dlcli.tracking import REQUIRE
    from dlcli.tune import load_context
    from dlcli.tune import tune as tune_fn

    console = stderr_console()

    def log(msg: str) -> None:
        console.print(msg, markup=False, highlight=False, soft_wrap=True)

    ctx = load_context(recipe, out, set_, trials, timeout_minutes, log=log, allow_code=allow_code)
    quiet_frameworks()
    ctx.quiet_native = native_quiet
    REQUIRE.set(require_tracking)
    log(f"study {ctx.recipe.name} in {ctx.out}: {ctx.recipe.tune.trials} trials, objectives "
        + ", ".join(f"{d[:3]} {n}" for n, d in zip(ctx.names, ctx.directions, strict=True)))
    result = tune_fn(ctx, jobs=jobs, select=select)
    if json_out:
        emit_json(result.to_json())
        return
    _table(result.summary)


def _table(s: dict) -> None:
    from rich.table import Table

    from dlcli.cli.common import stdout_console

    params = list(dict.fromkeys(k for t in s["trials"] for k in t["params"]))
    t = Table(title=f"study {s['study']}  ({s['storage']})", title_justify="left")
    for col in ("trial", "state", *params, *s["objectives"], "front"):
        t.add_column(col, justify="left" if col in ("state",) else "right")
    for tr in s["trials"]:
        vals = tr["values"] or {}
        mark = ("*" if tr["number"] in s["pareto_front"] else "") + (" selected" if tr["number"] == s["selected"] else "")
        state = tr["state"] if tr["attrs"].get("int8_gate", "passed") == "passed" else "infeasible"
        t.add_row(str(tr["number"]), state, *(_fmt(tr["params"].get(p)) for p in params),
                  *(_fmt(vals.get(n)) for n in s["objectives"]), mark.strip())
    console = stdout_console()
    console.print(t)
    if any(tr["attrs"].get("int8_gate", "passed") != "passed" for tr in s["trials"]):
        console.print("infeasible: the trial's int8 file failed its parity gate (tune.json: attrs.int8_gate)")
    if s["best_recipe"]:
        console.print(f"selected trial {s['selected']} ({s['selected_by']}) -> {s['best_recipe']}")
    else:
        console.print(f"no trial selected: {s['selected_by']}")


def _fmt(v) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}" if isinstance(v, float) else str(v)

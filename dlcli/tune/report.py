"""A study as data: every trial, the Pareto front, the selected trial and the parameter
importances, written to OUT/tune.json; the selected trial's recipe to OUT/best.yaml."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dlcli.atomic import write_json, write_text


def trial_rows(study, names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        rows.append({"number": t.number, "state": t.state.name.lower(), "params": dict(t.params),
                     "values": dict(zip(names, t.values, strict=True)) if t.values else None,
                     "attrs": {k: v for k, v in t.user_attrs.items() if k not in ("host", "pid")},
                     "duration_s": round(duration, 2) if duration is not None else None})
    return rows


def importances(study, names: list[str]) -> dict[str, dict[str, float]]:
    """fANOVA importance of each parameter for each objective (empty below 2 completed trials
    or when Optuna cannot compute it, e.g. a single sampled value)."""
    import optuna
    from optuna.trial import TrialState

    if len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))) < 2:
        return {}
    out = {}
    for i, name in enumerate(names):
        try:
            imp = optuna.importance.get_param_importances(study, target=lambda t, i=i: t.values[i])
        except (ValueError, RuntimeError):
            continue
        out[name] = {k: round(float(v), 4) for k, v in imp.items()}
    return out


def summarize(study, ctx, rule) -> dict[str, Any]:
    from dlcli.tune.select import choose
    from dlcli.tune.study import store_errors

    with store_errors(ctx.out):
        rows = trial_rows(study, ctx.names)
        front = sorted(t.number for t in study.best_trials)
        imp = importances(study, ctx.names)
    chosen, why = choose(rows, front, ctx.names, ctx.directions, rule)
    summary = {"study": ctx.recipe.name, "storage": str(ctx.out / "study.db"), "objectives": ctx.names,
               "directions": ctx.directions, "trials": rows, "pareto_front": front,
               "counts": {s: sum(r["state"] == s for r in rows) for s in ("complete", "pruned", "fail", "running")},
               "selected": chosen["number"] if chosen else None, "selected_by": why, "importances": imp,
               "best_recipe": None, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if chosen:
        summary["best_recipe"] = str(write_best(ctx.out, Path(chosen["attrs"]["run_dir"]), chosen, why))
    write_json(ctx.out / "tune.json", summary)
    return summary


def write_best(out: Path, trial_dir: Path, trial: dict, why: str) -> Path:
    """The trial's resolved recipe, paths relative to ``out``: ``dlcli train OUT/best.yaml``."""
    from dlcli.recipe.loader import load_recipe, recipe_to_yaml

    recipe = load_recipe(trial_dir / "recipe.yaml")
    values = ", ".join(f"{k} {v:.4g}" for k, v in (trial["values"] or {}).items())
    header = (f"# dlcli tune: trial {trial['number']} of study {recipe.name} ({why}): {values}\n"
              f"# its run directory: {trial_dir}\n")
    return write_text(out / "best.yaml", header + recipe_to_yaml(recipe, relative_to=out)) or out / "best.yaml"

"""``dlcli tune``: an Optuna search over a recipe's keys, every trial an ordinary run directory.

    OUT/study.db         the Optuna study (SQLite): a killed search resumes from it; --jobs N
                         processes share it
    OUT/trial-NNNN/      one run directory per trial (resumes like any run)
    OUT/tune.json        every trial, the Pareto front, the selected trial, parameter importances
    OUT/best.yaml        the selected trial's recipe: ``dlcli train OUT/best.yaml`` as it is
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlcli.errors import UsageError


@dataclass
class Context:
    path: Path  # the recipe file
    overrides: list[str]
    recipe: Any  # the base recipe (tune section resolved)
    out: Path
    names: list[str]  # objectives
    directions: list[str]
    log: Any = print
    allow_code: bool = False
    quiet_native: Any = contextlib.nullcontext
    parent_run: str | None = None  # MLflow: the study's run, parent of every trial's


@dataclass
class TuneResult:
    out: Path
    summary: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"out": str(self.out), **self.summary}


def load_context(path: Path, out: Path | None, overrides: list[str], trials: int | None,
                 timeout_minutes: float | None, log=None, allow_code: bool = False) -> Context:
    """The recipe and its search, checked before anything runs (exit 2 on a bad space)."""
    from dlcli.recipe.loader import load_recipe
    from dlcli.recipe.tune import direction_of
    from dlcli.tune.space import check_space, objective_names

    recipe = load_recipe(path, overrides)
    if recipe.tune is None:
        raise UsageError(f"{path}: the recipe has no tune: section (a search space and objectives); "
                         "see docs/tune.md")
    update = {k: v for k, v in (("trials", trials), ("timeout_minutes", timeout_minutes)) if v is not None}
    if update:
        recipe.tune = recipe.tune.model_validate({**recipe.tune.model_dump(), **update})
    if not recipe.tune.space:
        raise UsageError(f"{path}: tune.space is empty: name at least one recipe key to search")
    names = objective_names(recipe)
    directions = [direction_of(n) if o.direction == "auto" else o.direction
                  for n, o in zip(names, recipe.tune.objectives, strict=True)]
    check_space(path, overrides, recipe)
    out = Path(out) if out is not None else Path("runs") / f"{recipe.name}-tune"
    return Context(Path(path), list(overrides), recipe, out, names, directions, log or (lambda m: None), allow_code)


def tune(ctx: Context, *, jobs: int = 1, select: str | None = None) -> TuneResult:
    """Run the study to its budget (trials, time), then summarize it into tune.json and best.yaml."""
    from dlcli.tune import report
    from dlcli.tune.select import parse_rule
    from dlcli.tune.study import open_study, prepare_out

    rule = parse_rule(select, ctx.names) if select else None
    prepare_out(ctx.out)
    study = open_study(ctx.out, ctx.recipe, ctx.names, ctx.directions, parallel=jobs > 1)
    tracker = _parent_tracker(ctx, study)
    spec = ctx.recipe.tune
    deadline = time.time() + spec.timeout_minutes * 60 if spec.timeout_minutes else None
    if jobs > 1:
        from dlcli.tune.workers import run_workers

        run_workers(ctx, study, jobs, spec.trials, deadline)
    else:
        optimize(ctx, study, spec.trials, deadline)
    summary = report.summarize(study, ctx, rule)
    if tracker is not None:
        tracker.files([ctx.out / "tune.json", ctx.out / "best.yaml"])
        tracker.call("closing the run", tracker.client.set_terminated, tracker.run_id, "FINISHED")
    return TuneResult(ctx.out, summary)


def optimize(ctx: Context, study, budget: int, deadline: float | None) -> None:
    """Trials until the study holds ``budget`` of them or the deadline passes (this process)."""
    from optuna.trial import TrialState

    from dlcli import tracking
    from dlcli.tune import trial as trials
    from dlcli.tune.space import suggest, trial_recipe
    from dlcli.tune.study import next_trial, store_errors

    while deadline is None or time.time() < deadline:
        trial, resumed = next_trial(study, ctx.out, budget)
        if trial is None:
            return
        with store_errors(ctx.out):
            values = suggest(trial, ctx.recipe.tune.space)
        recipe = trial_recipe(ctx.path, ctx.overrides, ctx.recipe, values)
        ctx.log(f"trial {trial.number}{' (continued)' if resumed else ''}: "
                + ", ".join(f"{k}={_short(v)}" for k, v in values.items()))
        single = len(ctx.names) == 1 and ctx.recipe.tune.pruner == "median" and ctx.names[0] not in trials.COSTS
        cbs = [trials.pruning_callback(trial, f"val_{ctx.names[0]}")] if single else []
        with tracking.nested(ctx.parent_run):
            outcome = trials.run(ctx.out / f"trial-{trial.number:04d}", recipe, ctx.names, cbs, ctx)
        state = {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED, "failed": TrialState.FAIL}
        with store_errors(ctx.out):
            for k, v in outcome.attrs.items():
                trial.set_user_attr(k, v)
            for k, v in outcome.constraints.items():
                trial.set_constraint(k, v)
            study.tell(trial, outcome.values if outcome.state == "complete" else None, state=state[outcome.state])
        gate = outcome.attrs.get("int8_gate", "passed")
        ctx.log(f"trial {trial.number}: {outcome.state} "
                + (", ".join(f"{n} {v:.4g}" for n, v in zip(ctx.names, outcome.values, strict=True)) if outcome.values
                   else outcome.attrs.get("error", ""))
                + ("" if gate == "passed" else f" (infeasible: int8 gate: {gate})"))


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _parent_tracker(ctx: Context, study):
    """The study's own MLflow run (kept across sessions in the study): trials nest under it."""
    if ctx.recipe.tracking.backend != "mlflow":
        return None
    from dlcli import tracking
    from dlcli.recipe.loader import recipe_hash

    env = {"stage": "tune", "recipe_hash": recipe_hash(ctx.recipe), "tracking": study.user_attrs.get("tracking")}
    tracker = tracking.start(ctx.recipe, ctx.out, env, stage="tune", log=ctx.log)
    if not tracker.run_id:
        return None
    study.set_user_attr("tracking", env["tracking"])
    ctx.parent_run = tracker.run_id
    return tracker


def worker_main(argv: list[str]) -> int:
    """``python -m dlcli.tune RECIPE OUT WORKER BUDGET DEADLINE [--allow-code] [--set K=V ...]``:
    worker WORKER of --jobs N processes."""
    from dlcli.cli.common import quiet_frameworks
    from dlcli.errors import DlcliError
    from dlcli.tune.study import open_study

    path, out, worker, budget = Path(argv[0]), Path(argv[1]), int(argv[2]), int(argv[3])
    deadline = float(argv[4]) or None
    rest = argv[5:]
    allow_code = "--allow-code" in rest
    overrides = [rest[i + 1] for i, a in enumerate(rest) if a == "--set"]
    quiet_frameworks()
    try:
        ctx = load_context(path, out, overrides, budget, None, log=lambda m: print(m, file=sys.stderr, flush=True),
                           allow_code=allow_code)
        ctx.parent_run = os.environ.get("DLCLI_TRACKING_PARENT") or None
        from dlcli.tracking import REQUIRE

        REQUIRE.set(os.environ.get("DLCLI_REQUIRE_TRACKING") == "1")
        study = open_study(out, ctx.recipe, ctx.names, ctx.directions, parallel=True, worker=worker)
        optimize(ctx, study, budget, deadline)
    except DlcliError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return int(exc.exit_code)
    return 0

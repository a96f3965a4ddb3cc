"""The search space: dotted recipe keys sampled by Optuna, checked against the recipe schema
before any trial runs (no TensorFlow: ``dlcli validate`` checks it too)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dlcli.errors import RecipeError, UsageError
from dlcli.recipe.tune import COSTS, ChoiceParam, FloatParam, IntParam

_UNSET = object()


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def labels(p: ChoiceParam) -> list:
    """Optuna's categorical values: scalars as they are, lists and mappings as JSON text."""
    return list(p.values) if all(_is_scalar(v) for v in p.values) else [json.dumps(v) for v in p.values]


def active(p, chosen: dict[str, Any]) -> bool:
    return all(chosen.get(k, _UNSET) == v for k, v in p.when.items())


def suggest(trial, space: dict) -> dict[str, Any]:
    """Sample every active key of ``space`` for ``trial``: key -> recipe value."""
    chosen: dict[str, Any] = {}
    for key, p in space.items():
        if not active(p, chosen):
            continue
        if isinstance(p, FloatParam):
            chosen[key] = trial.suggest_float(key, p.low, p.high, log=p.log, step=p.step)
        elif isinstance(p, IntParam):
            chosen[key] = trial.suggest_int(key, p.low, p.high, step=p.step, log=p.log)
        else:
            pick = trial.suggest_categorical(key, labels(p))
            chosen[key] = p.values[labels(p).index(pick)]
    return chosen


def _parts(key: str) -> list[str | int]:
    return [int(x) if x.isdigit() else x for x in key.split(".")]


def _where(recipe, key: str) -> str:
    source = getattr(recipe, "_source", None)
    return f"{source.where(('tune', 'space', key))} (tune.space)" if source else "tune.space"


def trial_recipe(path: Path, overrides: list[str], base, values: dict[str, Any]):
    """The recipe of one trial: the file, the --set overrides, then the sampled values, validated
    by the schema; its ``tune:`` section dropped (the trial trains an ordinary recipe)."""
    from dlcli.recipe.loader import load_recipe

    items = [*overrides, *((_parts(k), v, _where(base, k)) for k, v in values.items())]
    recipe = load_recipe(path, items)
    recipe.tune = None
    return recipe


def check_space(path: Path, overrides: list[str], recipe) -> None:
    """Every key of the space exists in the schema and takes every value it may be given
    (both ends of a range, each choice), with the keys it depends on set; ``when`` names
    earlier keys only. Errors name the line of the space key (exit 2)."""
    space = recipe.tune.space
    seen: list[str] = []
    for key, p in space.items():
        for dep in p.when:
            if dep not in seen:
                raise RecipeError(f"{_where(recipe, key)}: {key}.when: {dep!r} is not an earlier key of tune.space")
        seen.append(key)
        condition = {k: v for k, v in p.when.items()}
        samples = [p.low, p.high] if not isinstance(p, ChoiceParam) else list(p.values)
        for value in samples:
            trial_recipe(path, overrides, recipe, {**condition, key: value})


def objective_names(recipe) -> list[str]:
    """The objectives, ``auto`` resolved, checked: a metric the run will report on a validation
    split, or a cost dlcli measures."""
    tune = recipe.tune
    metrics = ["accuracy" if m == "auto" and recipe.task == "classification" else ("mae" if m == "auto" else m)
               for m in recipe.train.metrics]
    names = []
    for i, o in enumerate(tune.objectives):
        name = metrics[0] if o.name == "auto" else o.name
        if name not in COSTS and name not in ("loss", *metrics):
            from dlcli.recipe.base import closest

            options = ["loss", *metrics, *COSTS]
            hint = closest(name, options)
            where = recipe._source.where(("tune", "objectives", i)) if recipe._source else "tune.objectives"
            raise RecipeError(f"{where}: tune.objectives.{i}: {name!r} is neither a metric of train.metrics nor a "
                              f"cost{', did you mean ' + repr(hint) + '?' if hint else ''} (one of: {', '.join(options)})")
        names.append(name)
    if len(set(names)) != len(names):
        raise RecipeError(f"tune.objectives: {', '.join(names)}: an objective is named twice")
    if all(n in COSTS for n in names):
        raise RecipeError("tune.objectives: only costs: add a metric (e.g. accuracy), or the smallest model wins")
    d = recipe.data
    if getattr(d, "validation_path", None) is None and d.split.validation <= 0:
        raise UsageError("tune: trials are compared on the validation split, and data.split.validation is 0: "
                         "hold some data out (data.split.validation or data.validation_path)")
    return names

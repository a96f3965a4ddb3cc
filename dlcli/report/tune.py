"""The report of a ``dlcli tune`` folder (its tune.json): the optimization history, the
Pareto front, the parameter importances and every trial, with the numbers in tables."""

from __future__ import annotations

import math
from pathlib import Path

from dlcli.report.context import _Ctx
from dlcli.report.figures import BLUE, GREY, ORANGE, RED, _figure
from dlcli.report.html import _e, _Num, _num, _table


def is_tune_dir(path: Path) -> bool:
    return (path / "tune.json").is_file() and (path / "study.db").exists()


def sections(ctx: _Ctx, s: dict) -> list[tuple[str, str, str]]:
    names, directions = s.get("objectives") or [], s.get("directions") or []
    trials = [t for t in s.get("trials") or [] if isinstance(t, dict)]
    out = [("summary", "Study", _summary(s, trials, names, directions))]
    done = [t for t in trials if t.get("values")]
    if done and names:
        out.append(("history", "Optimization history", _history(ctx, done, names[0], directions[0])))
    if len(names) >= 2 and done:
        out.append(("front", "Pareto front", _front(ctx, done, s, names)))
    if s.get("importances"):
        out.append(("importance", "Parameter importance (fANOVA)", _importance(ctx, s["importances"])))
    out.append(("trials", "Trials", _trials(trials, names, s)))
    return out


def _summary(s: dict, trials: list, names: list, directions: list) -> str:
    counts = ", ".join(f"{v} {k}" for k, v in (s.get("counts") or {}).items() if v)
    goal = ", ".join(f"{d} {n}" for n, d in zip(names, directions, strict=True))
    chosen = (f"trial {s['selected']} ({_e(s.get('selected_by'))}): <code>{_e(s.get('best_recipe'))}</code>"
              if s.get("selected") is not None else f"none ({_e(s.get('selected_by'))})")
    return (f"<p>{len(trials)} trials ({_e(counts)}); objectives: {_e(goal)}; storage <code>{_e(s.get('storage'))}"
            f"</code>.<br>Selected: {chosen}</p>")


def _history(ctx: _Ctx, done: list, name: str, direction: str) -> str:
    xs = [t["number"] for t in done]
    ys = [t["values"][name] for t in done]
    best, run = [], None
    for y in ys:
        run = y if run is None else (max(run, y) if direction == "maximize" else min(run, y))
        best.append(run)
    fig, ax = _figure(6.4, 3.4)
    ax.scatter(xs, ys, color=BLUE, s=18, label=name)
    ax.step(xs, best, where="post", color=ORANGE, label=f"best so far ({direction})")
    ax.set_xlabel("trial")
    ax.set_ylabel(name)
    ax.legend(fontsize=8)
    return ctx.add_plot("tune_history.png", f"{name} per trial, and the best so far", fig)


def _front(ctx: _Ctx, done: list, s: dict, names: list) -> str:
    x_name, y_name = names[1], names[0]
    front = set(s.get("pareto_front") or [])
    fig, ax = _figure(6.4, 3.8)
    for kind, color, pick in (("other", GREY, lambda t: t["number"] not in front and _feasible(t)),
                              ("infeasible (int8 gate failed)", RED, lambda t: not _feasible(t)),
                              ("Pareto front", BLUE, lambda t: t["number"] in front)):
        pts = [t for t in done if pick(t)]
        if pts:
            ax.scatter([t["values"][x_name] for t in pts], [t["values"][y_name] for t in pts], s=22, color=color,
                       label=kind)
    for t in done:
        if t["number"] in front or t["number"] == s.get("selected"):
            ax.annotate(str(t["number"]), (t["values"][x_name], t["values"][y_name]), fontsize=7,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
    ax.legend(fontsize=8)
    return ctx.add_plot("tune_front.png", f"{y_name} against {x_name}; numbers are trials", fig)


def _importance(ctx: _Ctx, importances: dict) -> str:
    parts = []
    for i, (objective, imp) in enumerate(importances.items()):
        keys = list(imp)[::-1]
        fig, ax = _figure(6.4, 0.5 + 0.35 * max(1, len(keys)))
        ax.barh(keys, [imp[k] for k in keys], color=BLUE)
        ax.set_xlabel(f"importance for {objective}")
        parts.append(ctx.add_plot(f"tune_importance_{i}.png", f"which parameters moved {objective}", fig))
    return '<div class="plots">' + "".join(parts) + "</div>"


def _feasible(t: dict) -> bool:
    return (t.get("attrs") or {}).get("int8_gate", "passed") == "passed"


def _trials(trials: list, names: list, s: dict) -> str:
    params = list(dict.fromkeys(k for t in trials for k in t.get("params") or {}))
    rows = []
    for t in trials:
        vals, attrs = t.get("values") or {}, t.get("attrs") or {}
        state = t.get("state") if _feasible(t) else "infeasible"
        mark = ("front " if t["number"] in (s.get("pareto_front") or []) else "") + \
            ("selected" if t["number"] == s.get("selected") else "")
        note = attrs.get("error") or (attrs.get("int8_gate") if not _feasible(t) else "") or \
            (f"pruned at epoch {attrs['pruned_at_epoch']}" if "pruned_at_epoch" in attrs else "")
        rows.append([t["number"], state, *(_cell(t["params"].get(p)) for p in params),
                     *(_cell(vals.get(n)) for n in names), _cell(attrs.get("int8_size_kb")), t.get("duration_s"),
                     mark.strip(), note])
    return _table(["trial", "state", *params, *names, "int8 KiB", "seconds", "", "note"], rows)


def _cell(v):
    if isinstance(v, float) and math.isfinite(v):
        return _Num(_num(v))
    return v

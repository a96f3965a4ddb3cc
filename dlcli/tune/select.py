"""Picking a trial: ``--select "accuracy>=0.98, min int8_latency_ms"`` (constraints, then
what to minimize or maximize), or by default the best trial (one objective) or the front's
best on the first objective (several)."""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass

from dlcli.errors import UsageError

OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|>|<)\s*([-+0-9.eE]+)\s*$")
_GOAL = re.compile(r"^\s*(min|max)\s+([A-Za-z_][\w.]*)\s*$")


@dataclass
class Rule:
    constraints: list[tuple[str, str, float]]
    goal: tuple[str, str] | None  # (min | max, name)

    def text(self) -> str:
        parts = [f"{n}{op}{v:g}" for n, op, v in self.constraints]
        return ", ".join(parts + ([f"{self.goal[0]} {self.goal[1]}"] if self.goal else []))


def parse_rule(text: str, names: list[str]) -> Rule:
    constraints, goal = [], None
    for part in (p for p in text.split(",") if p.strip()):
        m, g = _CONSTRAINT.match(part), _GOAL.match(part)
        if m:
            try:
                constraints.append((m.group(1), m.group(2), float(m.group(3))))
            except ValueError as exc:
                raise UsageError(f"--select: {part.strip()!r}: {m.group(3)!r} is not a number") from exc
        elif g and goal is None:
            goal = (g.group(1), g.group(2))
        else:
            raise UsageError(f"--select: cannot read {part.strip()!r}; write constraints like accuracy>=0.98 and "
                             "at most one goal like 'min int8_latency_ms', separated by commas")
    if not constraints and goal is None:
        raise UsageError("--select: empty rule")
    return Rule(constraints, goal)


def value(trial: dict, name: str) -> float | None:
    """A trial's objective value, cost or validation metric called ``name``."""
    for source in (trial.get("values") or {}, trial.get("attrs") or {}):
        if name in source:
            return source[name]
    return (trial.get("attrs") or {}).get(f"validation_{name}")


def choose(trials: list[dict], front: list[int], names: list[str], directions: list[str],
           rule: Rule | None) -> tuple[dict | None, str]:
    """The selected completed trial and why it was chosen."""
    done = [t for t in trials if t["state"] == "complete" and feasible(t)]
    if not done:
        return None, "no trial completed" + (" with an int8 file that passes its gate"
                                              if any(t["state"] == "complete" for t in trials) else "")
    if rule is None:
        pool = [t for t in done if t["number"] in front] or done
        sign = 1 if directions[0] == "maximize" else -1
        best = max(pool, key=lambda t: sign * t["values"][names[0]])
        why = "the best trial" if len(names) == 1 else f"the Pareto front's best {names[0]}"
        return best, why
    for n, _, _ in rule.constraints + ([(rule.goal[1], "", 0)] if rule.goal else []):
        if all(value(t, n) is None for t in done):
            raise UsageError(f"--select: no trial reports {n!r} (have: {', '.join(sorted(_names(done[0])))})")
    ok = [t for t in done if all(value(t, n) is not None and OPS[op](value(t, n), v) for n, op, v in rule.constraints)]
    if not ok:
        return None, f"no completed trial meets {rule.text()}"
    if rule.goal is None:
        return choose(ok, front, names, directions, None)[0], rule.text()
    sign = 1 if rule.goal[0] == "max" else -1
    return max((t for t in ok if value(t, rule.goal[1]) is not None),
               key=lambda t: sign * value(t, rule.goal[1])), rule.text()


def _names(trial: dict) -> set[str]:
    attrs = trial.get("attrs") or {}
    return set(trial.get("values") or {}) | {k.removeprefix("validation_") for k in attrs if k != "run_dir"}


def feasible(trial: dict) -> bool:
    """A trial whose int8 file (when measured) passed its parity gate."""
    return (trial.get("attrs") or {}).get("int8_gate", "passed") == "passed"

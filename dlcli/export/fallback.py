"""``--fallback auto``, one loop for every format: keep the worst-measured parts of an int8
model in float, one more at a time, until the file passes its gate or the budget is spent.

The format supplies the ranked candidates, how to build a trial file with a deny list, and
how to time it (its runtime's native batch-1 latency): TFLite keeps layers in float through
LiteRT's ``QuantizationDebugger`` (sensitivity.py), ONNX excludes nodes from onnxruntime's
static quantization (onnx_fallback.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def keep_in_float(candidates: Iterable[tuple[list[str], str, str]], target: Path, *, build: Callable,
                  check: Callable, timer: Callable, log, kind: str, unit: str, describe: Callable,
                  budget: int) -> tuple[dict[str, Any], Any]:
    """``candidates``: ``(names, op, label)``, worst first; ``build(deny, path)`` writes a trial
    file with every name in ``deny`` in float; ``check(path)`` is the gate; ``timer(path)``
    its native latency; ``describe(deny, label)`` a step's own fields. On success the trial
    replaces ``target`` (same folder: atomic). Returns ``(record, checks)``, ``checks`` None
    when no step passed; ``record[kind]`` lists what was kept in float."""
    record: dict[str, Any] = {"budget": budget, kind: [], "steps": [], "passed": False}
    deny: list[str] = []
    for names, op, label in candidates:
        deny += [n for n in names if n not in deny]
        log(f"fallback: keeping {len(deny)} {unit} in float ({op} {label[:60]}) ...")
        trial = target.with_name(f".{target.name}.tmp-{os.getpid()}{target.suffix}")  # swept if a kill leaves it
        try:
            build(deny, trial)
            checks = check(trial)
            timing = timer(trial)
        except BaseException:
            trial.unlink(missing_ok=True)
            raise
        record["steps"].append({**describe(deny, label), "op": op, "size_bytes": trial.stat().st_size,
                                "native_p50_ms": (timing.latency_ms or {}).get("p50"),
                                "passed": checks.passed, "failures": checks.failures})
        if checks.passed:
            os.replace(trial, target)
            record.update({kind: list(deny), "passed": True})
            return record, checks
        trial.unlink(missing_ok=True)
    return record, None


def adopt(art, target: Path, record: dict[str, Any], fixed, checks, budget: int, unit: str) -> bool:
    """Record a fallback on its artifact; True when the kept file is the fallback's (its
    sha256 and size updated), False when the plain int8 file stays (with a warning)."""
    from dlcli.export import sha256_path

    art.fallback = {**record, "plain": {"size_bytes": art.size_bytes, "checks": checks.to_json()}}
    if fixed is None:
        art.warnings.append(f"--fallback auto: the gate still fails with {len(record['steps'])} {unit} in float "
                            f"(fallback_budget {budget}); the int8 file without fallback is kept")
        return False
    art.sha256, art.size_bytes = sha256_path(target)
    return True

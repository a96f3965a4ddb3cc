"""``dlcli tune --jobs N``: N worker processes on one study (each ``python -m dlcli.tune``),
their output in OUT/worker-I.log; this process reports finished trials as they land."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from dlcli.errors import DlcliError, TrainingInterrupted

POLL_SECONDS = 2.0


def _command(ctx, worker: int, budget: int, deadline: float | None) -> list[str]:
    cmd = [sys.executable, "-m", "dlcli.tune", str(ctx.path), str(ctx.out), str(worker), str(budget),
           str(deadline or 0)]
    if ctx.allow_code:
        cmd.append("--allow-code")
    for o in ctx.overrides:
        cmd += ["--set", o]
    return cmd


def run_workers(ctx, study, jobs: int, budget: int, deadline: float | None) -> None:
    from dlcli.tracking import REQUIRE

    env = {**os.environ, "DLCLI_TRACKING_PARENT": ctx.parent_run or "", "DLCLI_REQUIRE_TRACKING": "1" if REQUIRE.get()
           else ""}
    logs = [open(ctx.out / f"worker-{i}.log", "ab") for i in range(jobs)]  # noqa: SIM115 - closed below
    procs = [subprocess.Popen(_command(ctx, i, budget, deadline), stdout=fh, stderr=subprocess.STDOUT, env=env,
                              stdin=subprocess.DEVNULL) for i, fh in enumerate(logs)]
    seen: set[int] = set()
    try:
        while any(p.poll() is None for p in procs):
            _report(ctx, study, seen)
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt as exc:
        _stop(procs)
        raise TrainingInterrupted("SIGINT: the workers stopped after their current step and wrote checkpoints; "
                                  "run the same dlcli tune again to continue the study") from exc
    finally:
        for fh in logs:
            fh.close()
    _report(ctx, study, seen)
    _check(ctx, procs)


def _report(ctx, study, seen: set[int]) -> None:
    from optuna.trial import TrialState

    for t in study.get_trials(deepcopy=False):
        if t.number in seen or t.state == TrialState.RUNNING:
            continue
        seen.add(t.number)
        values = ", ".join(f"{n} {v:.4g}" for n, v in zip(ctx.names, t.values, strict=True)) if t.values else \
            t.user_attrs.get("error", "")
        gate = t.user_attrs.get("int8_gate", "passed")
        ctx.log(f"trial {t.number}: {t.state.name.lower()} {values}"
                + ("" if gate == "passed" else f" (infeasible: int8 gate: {gate})"))


def _stop(procs) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()


def _check(ctx, procs) -> None:
    codes = [p.returncode for p in procs]
    if all(c == 0 for c in codes):
        return
    i, code = next((i, c) for i, c in enumerate(codes) if c != 0)
    log = ctx.out / f"worker-{i}.log"
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    last = next((ln for ln in reversed(lines) if ln.startswith("error:")), lines[-1] if lines else "")
    err = DlcliError(f"tune worker {i} stopped with exit {code} ({log}): {last[:300]}")
    err.exit_code = code if code in (2, 3, 4, 5, 11, 130) else 1
    raise err

"""A two-objective search on the digits CNN, then the selected trial retrained from best.yaml.

    python benchmarks/tune.py [--trials 20] [--jobs 1] [--out DIR] [--select "accuracy>=0.98, min int8_latency_ms"]

Runs ``dlcli tune recipes/digits_cnn_tune.yaml`` (filters, dense units, dropout, learning
rate; validation accuracy against the int8 TFLite file's native batch-1 latency, every int8
file through the parity gate) and prints:

* the wall time of the search and per trial;
* the Pareto front: accuracy, int8 latency and int8 size of each front trial;
* the selected trial, retrained from OUT/best.yaml with ``dlcli train``, and its validation
  accuracy next to the trial's (same seed, same data: equal within noise).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", default=None, help="Study folder (default: a temporary one).")
    ap.add_argument("--select", default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "study"
        cmd = [sys.executable, "-m", "dlcli", "tune", "recipes/digits_cnn_tune.yaml", "--out", str(out),
               "--trials", str(args.trials), "--jobs", str(args.jobs), "--json"]
        if args.select:
            cmd += ["--select", args.select]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            sys.exit(f"dlcli tune failed ({proc.returncode}): {proc.stderr[-2000:]}")
        s = json.loads(proc.stdout)
        _print_study(s, wall, args)
        if s["selected"] is not None:
            _retrain(s, Path(tmp))


def _print_study(s: dict, wall: float, args) -> None:
    trials = s["trials"]
    durations = [t["duration_s"] for t in trials if t["duration_s"]]
    print(f"search: {len(trials)} trials ({s['counts']}) in {wall:.0f} s wall with --jobs {args.jobs}; "
          f"per trial {min(durations):.1f}-{max(durations):.1f} s, mean {sum(durations) / len(durations):.1f} s")
    print("pareto front (validation accuracy vs int8 latency; size of the int8 file):")
    print(f"  {'trial':>5}  {'accuracy':>8}  {'int8 ms':>8}  {'int8 KiB':>8}  params")
    front = sorted((t for t in trials if t["number"] in s["pareto_front"]), key=lambda t: t["values"]["int8_latency_ms"])
    for t in front:
        p = ", ".join(f"{'.'.join(k.split('.')[-2:]) if k[-1].isdigit() else k.split('.')[-1]}={_v(v)}"
                      for k, v in t["params"].items())
        print(f"  {t['number']:>5}  {t['values']['accuracy']:>8.4f}  {t['values']['int8_latency_ms']:>8.4f}  "
              f"{t['attrs']['int8_size_kb']:>8.1f}  {p}")
    infeasible = [t["number"] for t in trials if t["attrs"].get("int8_gate", "passed") != "passed"]
    print(f"infeasible (int8 gate failed): {infeasible or 'none'}")
    print(f"selected: trial {s['selected']} ({s['selected_by']})")
    print(f"importances: {json.dumps(s['importances'])}")


def _retrain(s: dict, tmp: Path) -> None:
    chosen = next(t for t in s["trials"] if t["number"] == s["selected"])
    cmd = [sys.executable, "-m", "dlcli", "train", s["best_recipe"], "--run-dir", str(tmp / "retrained"), "--json",
           "--quiet"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
    again = json.loads(proc.stdout)["metrics"]["validation"]["accuracy"]
    print(f"best.yaml retrained: validation accuracy {again:.4f} vs the trial's {chosen['values']['accuracy']:.4f} "
          f"(difference {again - chosen['values']['accuracy']:+.4f})")


def _v(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


if __name__ == "__main__":
    main()

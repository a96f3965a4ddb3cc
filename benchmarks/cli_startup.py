"""Wall time of `dlcli --help` (and `dlcli validate`) beside `python -c pass`.

    python benchmarks/cli_startup.py [--runs 15]

Target: `dlcli --help` under 0.5 s. Prints the median and best of N runs each.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(cmd: list[str], runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    py = sys.executable
    cases = {
        "python -c pass": [py, "-c", "pass"],
        "dlcli --help": [py, "-m", "dlcli", "--help"],
        "dlcli validate recipes/digits_cnn.yaml": [py, "-m", "dlcli", "validate", "recipes/digits_cnn.yaml"],
        "python -c 'import tensorflow' (for scale)": [py, "-c", "import tensorflow"],
    }
    timed(cases["dlcli --help"], 2)  # warm the file cache
    print(f"{'command':45s} {'median s':>9s} {'best s':>8s}")
    results = {}
    for name, cmd in cases.items():
        t = timed(cmd, args.runs if "tensorflow" not in name else max(3, args.runs // 5))
        results[name] = statistics.median(t)
        print(f"{name:45s} {statistics.median(t):9.3f} {min(t):8.3f}")
    help_t = results["dlcli --help"]
    print(f"\ndlcli --help: {help_t:.3f} s median ({help_t - results['python -c pass']:.3f} s over bare Python); "
          f"target < 0.5 s: {'met' if help_t < 0.5 else 'MISSED'}")


if __name__ == "__main__":
    main()

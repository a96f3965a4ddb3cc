"""Throughput of `dlcli train` against a hand-written Keras script on the same job.

    python benchmarks/train_overhead.py [--epochs 10] [--pairs 3]

Both train the digits CNN (recipes/digits_cnn.yaml, early stopping off) for the same
epochs, in fresh processes, alternating dlcli / plain. Throughput is training samples
per second of model.fit (dlcli's includes its callbacks: checkpoints, history CSV,
TensorBoard, divergence guard). Prints each run and the ratio of medians
(dlcli / plain); target >= 0.97.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_dlcli(epochs: int, extra: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "dlcli", "train", "recipes/digits_cnn.yaml", "--run-dir", f"{tmp}/run",
               "--json", "--quiet", "--set", f"train.epochs={epochs}",
               "--set", "train.callbacks.early_stopping=null", *extra]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
        return json.loads(proc.stdout)["samples_per_second"]


def run_plain(epochs: int) -> float:
    proc = subprocess.run([sys.executable, "benchmarks/plain_keras_digits.py", str(epochs)], cwd=REPO,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])["samples_per_second"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="extra --set for dlcli")
    args = ap.parse_args()
    extra = [a for s in args.set for a in ("--set", s)]
    dl, plain = [], []
    print(f"{'pair':>4s} {'dlcli samples/s':>16s} {'plain samples/s':>16s}")
    for i in range(args.pairs):
        dl.append(run_dlcli(args.epochs, extra))
        plain.append(run_plain(args.epochs))
        print(f"{i + 1:4d} {dl[-1]:16.1f} {plain[-1]:16.1f}")
    ratio = statistics.median(dl) / statistics.median(plain)
    print(f"\nmedian dlcli {statistics.median(dl):.1f} samples/s, plain Keras {statistics.median(plain):.1f} "
          f"samples/s, ratio {ratio:.3f} (target >= 0.97: {'met' if ratio >= 0.97 else 'MISSED'})")


if __name__ == "__main__":
    main()

"""`dlcli train` against a hand-written Keras script on the same job.

    python benchmarks/train_overhead.py [--epochs 20] [--pairs 3] [--set train.steps_per_execution=1]

Both train the digits CNN (recipes/digits_cnn.yaml, early stopping off) for the same
epochs, in fresh processes, alternating dlcli / plain. The plain script is what a
competent Keras user writes: a `tf.data` pipeline with cache, shuffle and prefetch into
`model.fit` (benchmarks/plain_keras_digits.py). Two figures per run:

* training samples per second (dlcli's includes its callbacks: checkpoints, history CSV,
  TensorBoard, divergence guard; both include the validation pass of every epoch);
* whole-process wall time (start-up, data, training, evaluation, files).

Prints each run and the ratios of medians (dlcli / plain; for time, plain / dlcli, so
higher is better for dlcli in both); target: samples/s ratio >= 1.25.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_dlcli(epochs: int, extra: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "dlcli", "train", "recipes/digits_cnn.yaml", "--run-dir", f"{tmp}/run",
               "--json", "--quiet", "--set", f"train.epochs={epochs}",
               "--set", "train.callbacks.early_stopping=null", *extra]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True)
        return json.loads(proc.stdout)["samples_per_second"], time.perf_counter() - t


def run_plain(epochs: int) -> tuple[float, float]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "benchmarks/plain_keras_digits.py", str(epochs)], cwd=REPO,
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])["samples_per_second"], time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="extra --set for dlcli")
    args = ap.parse_args()
    extra = [a for s in args.set for a in ("--set", s)]
    dl, plain = [], []
    print(f"{'pair':>4s} {'dlcli samples/s':>16s} {'plain samples/s':>16s} {'dlcli process s':>16s} "
          f"{'plain process s':>16s}")
    for i in range(args.pairs):
        dl.append(run_dlcli(args.epochs, extra))
        plain.append(run_plain(args.epochs))
        print(f"{i + 1:4d} {dl[-1][0]:16.1f} {plain[-1][0]:16.1f} {dl[-1][1]:16.2f} {plain[-1][1]:16.2f}")
    sps = [statistics.median(r[0] for r in runs) for runs in (dl, plain)]
    wall = [statistics.median(r[1] for r in runs) for runs in (dl, plain)]
    ratio = sps[0] / sps[1]
    print(f"\ntraining: dlcli {sps[0]:.1f} samples/s, plain Keras (tf.data + fit) {sps[1]:.1f} samples/s, "
          f"ratio {ratio:.3f} (target >= 1.25: {'met' if ratio >= 1.25 else 'MISSED'})")
    print(f"whole process: dlcli {wall[0]:.2f} s, plain Keras {wall[1]:.2f} s, ratio (plain / dlcli) "
          f"{wall[1] / wall[0]:.3f}")


if __name__ == "__main__":
    main()

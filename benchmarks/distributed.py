"""Throughput of the digits quick start under each tf.distribute strategy dlcli offers.

    python benchmarks/distributed.py [--epochs 5] [--runs 3]

Trains recipes/digits_cnn.yaml (early stopping off, the same epochs everywhere) in
fresh processes:

* plain Keras ``model.fit`` in one process, no tf.distribute (the baseline,
  benchmarks/plain_keras_digits.py);
* ``dlcli train --strategy default`` (one process, one device);
* ``--strategy mirrored`` over the CPU split into two logical devices;
* two worker processes on localhost (``TF_CONFIG``, MultiWorkerMirroredStrategy),
  all-reducing over gRPC.

Throughput is training samples per second of the training loop (validation and
checkpoints included, process start-up and the final evaluation excluded), the median
of ``--runs``. For two workers it is the global rate (both workers' samples per second
of wall time). These machines have 2 cores, so no strategy can be faster here: the
ratios show what each strategy costs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "recipes" / "digits_cnn.yaml"


def _dlcli(run_dir: Path, epochs: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dlcli", "train", str(RECIPE), "--run-dir", str(run_dir), "--json", "--quiet",
            "--set", f"train.epochs={epochs}", "--set", "train.callbacks.early_stopping=null", *extra]


def run_single(epochs: int, *extra: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.run(_dlcli(Path(tmp) / "run", epochs, *extra), capture_output=True, text=True, check=True)
        out = json.loads(proc.stdout)
        return {"sps": out["samples_per_second"], "acc": out["metrics"]["test"]["accuracy"]}


def run_workers(epochs: int, n: int = 2) -> dict:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    with tempfile.TemporaryDirectory() as tmp:
        procs = []
        for i in range(n):
            cfg = {"cluster": {"worker": [f"localhost:{p}" for p in ports]}, "task": {"type": "worker", "index": i}}
            procs.append(subprocess.Popen(_dlcli(Path(tmp) / f"run{i}", epochs),
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          env={**os.environ, "TF_CONFIG": json.dumps(cfg)}))
        outs = []
        for p in procs:
            stdout, stderr = p.communicate()
            if p.returncode != 0:
                raise SystemExit(f"worker failed ({p.returncode}): {stderr[-2000:]}")
            outs.append(json.loads(stdout))
        chief = next(o for o in outs if o["chief"])
        return {"sps": chief["samples_per_second"], "acc": chief["metrics"]["test"]["accuracy"]}


def run_plain(epochs: int) -> dict:
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "plain_keras_digits.py"), str(epochs)],
                          capture_output=True, text=True, check=True)
    return {"sps": json.loads(proc.stdout.strip().splitlines()[-1])["samples_per_second"], "acc": None}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    setups = [
        ("plain Keras fit, one process", lambda: run_plain(args.epochs)),
        ("dlcli default strategy", lambda: run_single(args.epochs, "--strategy", "default")),
        ("dlcli mirrored, 2 logical CPUs", lambda: run_single(args.epochs, "--strategy", "mirrored",
                                                               "--set", "train.cpu_devices=2")),
        ("dlcli 2 local workers", lambda: run_workers(args.epochs)),
    ]
    results: dict[str, list[dict]] = {name: [] for name, _ in setups}
    for r in range(args.runs):  # interleaved, so drift in machine load spreads over every setup
        for name, fn in setups:
            results[name].append(fn())
            print(f"run {r + 1} {name}: {results[name][-1]['sps']:.0f} samples/s", file=sys.stderr, flush=True)
    base = statistics.median(x["sps"] for x in results[setups[0][0]])
    default = statistics.median(x["sps"] for x in results[setups[1][0]])
    print(f"digits CNN, {args.epochs} epochs, global batch 32, median of {args.runs} runs, "
          f"{os.cpu_count()} CPU cores\n")
    print("| setup | samples/s | vs plain Keras | vs dlcli default | test accuracy |")
    print("|---|---:|---:|---:|---:|")
    for name, _ in setups:
        sps = statistics.median(x["sps"] for x in results[name])
        accs = {round(x["acc"], 4) for x in results[name] if x["acc"] is not None}
        acc = ", ".join(f"{a:.4f}" for a in sorted(accs)) if accs else "-"
        print(f"| {name} | {sps:,.0f} | {sps / base:.3f} | {sps / default:.3f} | {acc} |")


if __name__ == "__main__":
    main()

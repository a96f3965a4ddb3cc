"""Compression on the digits quick start: dense float, pruned (80%, the defaults of
`dlcli prune RUN --sparsity 0.8`), int8, pruned + int8, distilled student. Prints sparsity,
test accuracy, TFLite size and gzip size; then kills a prune and a distill with SIGKILL
mid-run, reruns the same command, and compares the weights' sha256 with the
uninterrupted runs.

    python benchmarks/compress.py [--run-dir runs/digits_cnn]   # trains it first if absent

Targets: 80% sparsity with at most 0.5 point accuracy drop (prune defaults); pruned +
int8 TFLite gzip at most 0.15x the dense float32 TFLite (gzip against gzip); resumed
runs sha256-equal to uninterrupted ones.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quickstart import DEFAULT_RUN, quickstart_run


def gz(path: Path) -> int:
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", default=str(DEFAULT_RUN))
    args = ap.parse_args()
    run = quickstart_run(args.run_dir)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from dlcli.compress.distill import distill
    from dlcli.compress.prune import measure, prune
    from dlcli.export import export_run
    from dlcli.rundir import load_keras_model

    pruned = run.parent / f"{run.name}-bench-pruned"
    prune(run, pruned, sparsity=0.8, overwrite=True, progress="none")
    student = run.parent / f"{run.name}-bench-student"
    distill(run, REPO / "recipes" / "digits_student.yaml", student, overwrite=True, progress="none")
    rows = []
    for label, rdir in (("dense", run), ("pruned 80%", pruned), ("distilled student", student)):
        res = export_run(rdir, ["tflite"], "int8", out_dir=rdir / "export_bench")
        sparsity = measure(load_keras_model(rdir / "model.keras"))["model_sparsity"]
        for a in res.artifacts:
            kind = "float32" if a.quantization == "none" else "int8"
            if label == "distilled student" and kind == "int8":
                continue
            path = res.out_dir / a.path
            rows.append((f"{label} {kind}", sparsity, a.checks["artifact_metric"], a.size_bytes, gz(path),
                         res.keras["parameters"], a.status))
    ref_gz = rows[0][4]
    ref_acc = rows[0][2]
    print(f"{'model':28s} {'params':>7s} {'zeros':>8s} {'test acc':>8s} {'tflite B':>9s} {'gzip B':>8s} "
          f"{'gzip vs dense f32':>17s} gate")
    for name, sp, acc, size, g, params, status in rows:
        print(f"{name:28s} {params:7d} {sp:8.3f} {acc:8.4f} {size:9d} {g:8d} {g / ref_gz:17.3f} {status}")
    pruned_f32 = next(r for r in rows if r[0] == "pruned 80% float32")
    pruned_i8 = next(r for r in rows if r[0] == "pruned 80% int8")
    drop = 100 * (ref_acc - pruned_f32[2])
    report = json.loads((pruned / "sparsity.json").read_text())
    print(f"\npruned (defaults): {report['pruned_sparsity']:.3f} of the pruned kernels' weights are zero "
          f"({report['model_sparsity']:.3f} of all weights; dense: {', '.join(r['layer'] for r in report['layers'] if not r['pruned'])}), "
          f"accuracy drop {drop:.2f} pts -> target (>= 0.80, <= 0.5 pt) "
          f"{'met' if report['pruned_sparsity'] >= 0.795 and drop <= 0.5 else 'MISSED'}")
    print(f"pruned + int8 gzip: {pruned_i8[4] / ref_gz:.3f}x the dense float32 TFLite gzip "
          f"({pruned_i8[4] / rows[0][3]:.3f}x its raw size) -> target <= 0.15x "
          f"{'met' if pruned_i8[4] / ref_gz <= 0.15 else 'MISSED'}")
    print()
    for label, args in (("prune", ["prune", str(run), "--sparsity", "0.8"]),
                        ("distill", ["distill", str(run), str(REPO / "recipes" / "digits_student.yaml")])):
        kill_and_resume(label, args, run.parent / f"{run.name}-bench-kill")


KILLER = """
import os, signal, sys
import dlcli.train.resume as R
nth = int(sys.argv[1]); sys.argv = [sys.argv[0], *sys.argv[2:]]; calls = {"n": 0}; link = R._link_last
def killed(*a, **k):
    link(*a, **k); calls["n"] += 1
    if calls["n"] == nth: os.kill(os.getpid(), signal.SIGKILL)
R._link_last = killed
from dlcli.cli.main import run
run()
"""


def kill_and_resume(label: str, args: list[str], root: Path) -> None:
    """The command uninterrupted, then killed (SIGKILL) after its 2nd checkpoint and run again."""
    shutil.rmtree(root, ignore_errors=True)
    args = [*args, "--set", "train.callbacks.checkpoint.min_interval_seconds=0.5"]  # several checkpoints a run
    ref = [sys.executable, "-m", "dlcli", *args, "--json", "--run-dir", str(root / "ref")]
    t = time.perf_counter()
    subprocess.run(ref, cwd=REPO, capture_output=True, check=True)
    plain = time.perf_counter() - t
    out = root / "killed"
    t = time.perf_counter()
    killed = subprocess.run([sys.executable, "-c", KILLER, "2", *args, "--json", "--run-dir", str(out)], cwd=REPO,
                            capture_output=True, check=False)
    subprocess.run([sys.executable, "-m", "dlcli", *args, "--json", "--run-dir", str(out)], cwd=REPO,
                   capture_output=True, check=True)
    both = time.perf_counter() - t
    a = json.loads((root / "ref" / "env.json").read_text())["weights_sha256"]
    b = json.loads((out / "env.json").read_text())["weights_sha256"]
    print(f"{label}: killed with exit {killed.returncode}, resumed; sha256 {'EQUAL' if a == b else 'DIFFERENT'} "
          f"({a[:12]} / {b[:12]}); uninterrupted {plain:.1f} s, killed + resumed {both:.1f} s")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()

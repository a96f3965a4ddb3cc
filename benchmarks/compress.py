"""Compression on the digits quick start: dense float, pruned (80%), int8, pruned + int8,
distilled student. Prints sparsity, test accuracy, TFLite size and gzip size.

    python benchmarks/compress.py [--run-dir runs/digits_cnn]   # trains it first if absent

Targets (issue: compression): 80% sparsity with at most 1 point accuracy drop; pruned +
int8 TFLite gzip at most 0.15x the dense float32 TFLite (gzip against gzip).
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quickstart import DEFAULT_RUN, quickstart_run  # noqa: E402


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
    from dlcli.inspect import load_keras_model

    pruned = run.parent / f"{run.name}-bench-pruned"
    prune(run, pruned, sparsity=0.8, overwrite=True, progress="none")
    student = run.parent / f"{run.name}-bench-student"
    distill(run, REPO / "recipes" / "digits_student.yaml", student, overwrite=True, progress="none")
    rows = []
    for label, rdir in (("dense", run), ("pruned 80%", pruned), ("distilled student", student)):
        res = export_run(rdir, ["tflite"], "int8", out_dir=rdir / "export_bench")
        sparsity = measure(load_keras_model(rdir / "model.keras"))["prunable_sparsity"]
        for a in res.artifacts:
            kind = "float32" if a.quantization == "none" else "int8"
            if label == "distilled student" and kind == "int8":
                continue
            path = res.out_dir / a.path
            rows.append((f"{label} {kind}", sparsity, a.checks["artifact_metric"], a.size_bytes, gz(path),
                         res.keras["parameters"], a.status))
    ref_gz = rows[0][4]
    ref_acc = rows[0][2]
    print(f"{'model':28s} {'params':>7s} {'sparsity':>8s} {'test acc':>8s} {'tflite B':>9s} {'gzip B':>8s} "
          f"{'gzip vs dense f32':>17s} gate")
    for name, sp, acc, size, g, params, status in rows:
        print(f"{name:28s} {params:7d} {sp:8.3f} {acc:8.4f} {size:9d} {g:8d} {g / ref_gz:17.3f} {status}")
    pruned_f32 = next(r for r in rows if r[0] == "pruned 80% float32")
    pruned_i8 = next(r for r in rows if r[0] == "pruned 80% int8")
    drop = 100 * (ref_acc - pruned_f32[2])
    print(f"\npruned: sparsity {pruned_f32[1]:.3f}, accuracy drop {drop:.2f} pts "
          f"-> target (>= 0.80 sparsity, <= 1 pt) {'met' if pruned_f32[1] >= 0.795 and drop <= 1 else 'MISSED'}")
    print(f"pruned + int8 gzip: {pruned_i8[4] / ref_gz:.3f}x the dense float32 TFLite gzip "
          f"({pruned_i8[4] / rows[0][3]:.3f}x its raw size) -> target <= 0.15x "
          f"{'met' if pruned_i8[4] / ref_gz <= 0.15 else 'MISSED'}")


if __name__ == "__main__":
    main()

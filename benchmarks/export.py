"""Export the digits quick start in every format and mode; print size, ratio to the
float32 TFLite, conversion time, parity and test accuracy.

    python benchmarks/export.py [--run-dir runs/digits_cnn]   # trains it first if absent

Targets (issue: export): int8 TFLite <= 0.30x the float32 TFLite with <= 1 point
accuracy drop; float16 <= 0.55x.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quickstart import DEFAULT_RUN, quickstart_run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", default=str(DEFAULT_RUN))
    args = ap.parse_args()
    run = quickstart_run(args.run_dir)
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # Keras retracing notes between exports
    from dlcli.export import export_run

    rows = []
    out = run / "export_bench"
    res = export_run(run, ["saved_model", "tflite", "onnx"], "int8", out_dir=out / "int8")
    keras_acc = res.keras["value"]
    rows += res.artifacts
    for q in ("dynamic", "float16"):
        rows += [a for a in export_run(run, ["tflite"], q, out_dir=out / q).artifacts if a.quantization == q]
    pt = [a for a in export_run(run, ["tflite"], "int8", out_dir=out / "int8_per_tensor", int8_per_channel=False).artifacts
          if a.quantization == "int8"]
    for a in pt:
        a.name = "model_int8.tflite (per-tensor)"
    rows += pt
    ref = next(a.size_bytes for a in rows if a.name == "model_float32.tflite")
    print(f"digits quick start: Keras test accuracy {keras_acc:.4f} on {res.keras['samples']} test images, "
          f"{res.keras['parameters']} parameters\n")
    head = f"{'artifact':32s} {'bytes':>8s} {'ratio':>6s} {'convert s':>9s} {'max abs err':>11s} {'top-1':>6s} {'accuracy':>8s} {'drop pts':>8s} gate"
    print(head)
    print("-" * len(head))
    for a in rows:
        c = a.checks
        print(f"{a.name:32s} {a.size_bytes:8d} {a.size_bytes / ref:6.3f} {a.conversion_seconds:9.2f} "
              f"{c['max_abs_error']:11.2e} {c['top1_agreement']:6.3f} {c['artifact_metric']:8.4f} "
              f"{100 * c['metric_drop']:8.2f} {a.status}")
    by = {a.name: a for a in rows}
    i8, f16 = by["model_int8.tflite"], by["model_float16.tflite"]
    pt = by.get("model_int8.tflite (per-tensor)")
    print()
    print(f"int8 (per-channel): {i8.size_bytes / ref:.3f}x, drop {100 * i8.checks['metric_drop']:.2f} pts "
          f"-> size target <= 0.30x {'met' if i8.size_bytes / ref <= 0.30 else 'MISSED'}")
    if pt:
        print(f"int8 (per-tensor):  {pt.size_bytes / ref:.3f}x, drop {100 * pt.checks['metric_drop']:.2f} pts "
              f"-> size target <= 0.30x {'met' if pt.size_bytes / ref <= 0.30 else 'MISSED'}")
    print(f"float16:            {f16.size_bytes / ref:.3f}x -> target <= 0.55x "
          f"{'met' if f16.size_bytes / ref <= 0.55 else 'MISSED'}")


if __name__ == "__main__":
    main()

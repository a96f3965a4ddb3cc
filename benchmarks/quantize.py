"""Float vs every quantization dlcli offers, on the shipped recipes and one hostile model.

    python benchmarks/quantize.py [--recipes digits_cnn digits_rnn ...] [--epochs N] [--out DIR]

For each recipe: train it (``--epochs`` shortens training), then export the same model as
float32 TFLite, int8 TFLite (plain), int8 with ``--fallback auto``, int16x8 TFLite, float
ONNX, static int8 ONNX (onnxruntime) plain and with ``--fallback auto``, and print per artifact: size and its ratio to the
float32 file, the test metric and its drop against Keras, top-1 agreement (classifiers),
batch-1 native latency (LiteRT CompiledModel / onnxruntime io_binding, 1 thread, 20 warm-up
+ 200 runs) and the parity gate's verdict.

``wide_inputs`` is the hostile case: the breast-cancer MLP with ``data.normalize: none``
(features from 0.001 to 4,000 share one int8 input scale), trained 20 epochs with seed 1,
where plain int8 loses more than a point and fails its gate, and the fallback and
quantization-aware training recover it.

``qat int8`` is ``dlcli qat RUN`` (quantization-aware fine-tuning, the recipe's defaults:
3 epochs at a tenth of the training rate) exported as int8 TFLite: its size ratio is to the
float32 file of the source run, its drop against the source's float Keras model.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT = ["digits_cnn", "digits_rnn", "digits_transformer", "breast_cancer_mlp", "digits_autoencoder", "wide_inputs"]
MODES = [  # label, formats, tflite quantize, export options, artifact name
    ("float32 tflite", ["tflite"], "none", {}, "model_float32.tflite"),
    ("int8", ["tflite"], "int8", {}, "model_int8.tflite"),
    ("int8 fallback auto", ["tflite"], "int8", {"fallback": "auto"}, "model_int8.tflite"),
    ("int16x8", ["tflite"], "int16x8", {}, "model_int16x8.tflite"),
    ("float32 onnx", ["onnx"], "none", {}, "model.onnx"),
    ("int8 onnx", ["onnx"], "none", {"onnx_quantize": "int8"}, "model_int8.onnx"),
    ("int8 onnx fallback auto", ["onnx"], "none", {"onnx_quantize": "int8", "fallback": "auto"}, "model_int8.onnx"),
]


def _recipe(name: str, epochs: int | None):
    from dlcli.recipe.loader import load_recipe

    sets = [f"train.epochs={epochs}"] if epochs else []
    if name == "wide_inputs":
        return load_recipe(REPO / "recipes" / "breast_cancer_mlp.yaml",  # 20 epochs, seed 1: the first
                           ["name=wide_inputs", "data.normalize=none", "train.epochs=20", "seed=1"])  # layer relies
        # on the small features that one int8 input scale rounds away
    return load_recipe(REPO / "recipes" / f"{name}.yaml", sets)


def _native(path: Path, fmt: str) -> float | None:
    from dlcli.latency import native

    with contextlib.redirect_stdout(sys.stderr):
        n = native(path, fmt, threads=1, warmup=20, runs=200)
    return (n.latency_ms or {}).get("p50") if n is not None else None


def bench(name: str, epochs: int | None, root: Path) -> list[list]:
    from dlcli.export import export_run
    from dlcli.train import train

    run = root / name
    t0 = time.perf_counter()
    train(_recipe(name, epochs), run, progress="none", pipeline=False, overwrite=True)
    print(f"{name}: trained in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    rows, ref, keras_float = [], None, None
    for label, formats, q, options, artifact in MODES:
        res = export_run(run, formats, q, out_dir=run / label.replace(" ", "_"), **options)
        art = next((a for a in res.artifacts if a.name == artifact), None)
        if art is None:
            continue
        ref = ref or art.size_bytes
        c = art.checks or {}
        metric, keras = c.get("artifact_metric"), res.keras["value"]
        drop = (keras - metric) if metric is not None and res.keras["metric"] == "accuracy" else \
            (metric - keras if metric is not None else None)
        note = ""
        if art.fallback:
            kept = art.fallback.get("layers") or art.fallback.get("nodes") or []
            note = f"{len(kept)} layer(s) / node(s) in float" if art.fallback["passed"] else "budget spent"
        p50 = _native(res.out_dir / art.path, art.format) if art.size_bytes else None
        rows.append([name, label, art.size_bytes, art.size_bytes / ref if ref else None, res.keras["metric"],
                     metric, drop, c.get("top1_agreement"), p50, art.status, note or (art.error or "")[:60]])
        keras_float = keras_float or res.keras
    rows.append(_qat_row(name, run, root, ref, keras_float))
    return rows


def _qat_row(name: str, run: Path, root: Path, ref: int, keras_float: dict) -> list:
    """Quantization-aware fine-tuning of ``run``, exported as int8 TFLite, against the float model."""
    from dlcli.compress.qat import qat
    from dlcli.errors import DlcliError
    from dlcli.export import export_run

    t0 = time.perf_counter()
    try:
        q = qat(run, root / f"{name}-qat", progress="none", overwrite=True)
    except DlcliError as exc:
        return [name, "qat int8", 0, None, keras_float["metric"], None, None, None, None, "-", str(exc)[:60]]
    print(f"{name}: quantization-aware training in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    res = export_run(q.run_dir, ["tflite"], "int8")
    art = next(a for a in res.artifacts if a.quantization == "int8")
    c = art.checks or {}
    metric, keras = c.get("artifact_metric"), keras_float["value"]
    drop = None if metric is None else (keras - metric if keras_float["metric"] == "accuracy" else metric - keras)
    p50 = _native(res.out_dir / art.path, art.format) if art.size_bytes else None
    return [name, "qat int8", art.size_bytes, art.size_bytes / ref if ref else None, keras_float["metric"], metric,
            drop, c.get("top1_agreement"), p50, art.status, (art.error or "")[:60]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--recipes", nargs="*", default=DEFAULT)
    ap.add_argument("--epochs", type=int, default=None, help="Shorter training (default: the recipe's).")
    ap.add_argument("--out", default=None, help="Keep the runs here (default: a temporary folder).")
    args = ap.parse_args()
    from dlcli.cli.common import quiet_frameworks

    quiet_frameworks()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out) if args.out else Path(tmp)
        rows = [r for name in args.recipes for r in bench(name, args.epochs, root)]
    print(f"{'recipe':<20} {'artifact':<24} {'bytes':>9} {'ratio':>6} {'metric':<9} {'value':>7} {'drop':>8} "
          f"{'top-1':>6} {'p50 ms':>8}  gate")
    for r in rows:
        name, label, size, ratio, mname, value, drop, top1, p50, status, note = r
        print(f"{name:<20} {label:<24} {size:>9,} {_f(ratio, '.2f'):>6} {mname:<9} {_f(value, '.4f'):>7} "
              f"{_f(drop, '+.4f'):>8} {_f(top1, '.3f'):>6} {_f(p50, '.4f'):>8}  {status} {note}")
    print("drop: Keras minus artifact for accuracy, artifact minus Keras for error metrics (MAE).")


def _f(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


if __name__ == "__main__":
    main()

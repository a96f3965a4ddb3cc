"""The shipped generative recipes in full: GAN, conditional GAN, VAE, anomaly detector.

    python benchmarks/generative.py [--recipes digits_gan digits_cgan digits_vae digits_anomaly] [--out DIR]

For each recipe: train it with the recipe's own settings (seed 42), then export it to every
format with int8 TFLite and static int8 ONNX, and print:

* GANs: the validation Frechet distance (judge features) at the first, best and last epoch,
  the epoch early stopping kept, the test split's distance of the kept generator and, for
  the conditional GAN, the judge's accuracy on generated digits of each class;
* the VAE: test reconstruction MSE / MAE;
* the anomaly detector: the threshold and the test split's ROC AUC, precision, recall, F1
  and false positive rate (digits 5-9 are the anomalies);
* every export: size, the gate's metric and verdict.

Training time is wall time on this machine (2 CPU cores in CI).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT = ["digits_gan", "digits_cgan", "digits_vae", "digits_anomaly"]


def _history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _gan_lines(run: Path, metrics: dict) -> list[str]:
    rows = _history(run)
    key = "val_frechet_distance" if "val_frechet_distance" in rows[0] else "frechet_distance"
    fd = [float(r[key]) for r in rows]
    best = min(range(len(fd)), key=fd.__getitem__)
    env = json.loads((run / "env.json").read_text())
    lines = [(f"  {key} per epoch: first {fd[0]:.2f} (epoch 1), best {fd[best]:.2f} (epoch {best + 1}), "
             f"last {fd[-1]:.2f} (epoch {len(fd)})"),
             (f"  kept epoch {env.get('kept_epoch') or len(fd)}: test frechet_distance "
             f"{metrics['test']['frechet_distance']:.2f}")]
    if "class_accuracy" in metrics["test"]:
        acc = [float(r["class_accuracy"]) for r in rows]
        lines.append(f"  class_accuracy: first {acc[0]:.3f}, at the best epoch {acc[best]:.3f}, kept "
                     f"{metrics['test']['class_accuracy']:.3f}")
    return lines


def _anomaly_lines(run: Path) -> list[str]:
    a = json.loads((run / "anomaly.json").read_text())
    t = a["test"]
    return [f"  threshold {a['threshold']:.5f} ({a['rule']} of {a['calibrated_on']['split']} errors)",
            (f"  test: {t['examples']} examples, {t['anomalies']} anomalies: ROC AUC {t['roc_auc']:.4f}, precision "
            f"{t['precision']:.3f}, recall {t['recall']:.3f}, F1 {t['f1']:.3f}, false positive rate "
            f"{t['false_positive_rate']:.3f}")]


def _export_lines(run: Path) -> list[str]:
    from dlcli.cli.common import native_quiet
    from dlcli.export import export_run

    with native_quiet():
        res = export_run(run, ["saved_model", "tflite", "onnx"], quantize="int8", onnx_quantize="int8")
    out = [f"  {'artifact':<22}{'size':>10}  {'metric':<14}{'value':>9}  gate"]
    for a in res.artifacts:
        c = a.checks
        out.append(f"  {a.name:<22}{a.size_bytes / 1024:>9.1f}k  {c.get('metric', '-'):<14}"
                   f"{c.get('artifact_metric', float('nan')):>9.4f}  {a.status}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=DEFAULT)
    ap.add_argument("--out", type=Path, default=None, help="Keep the runs here (default: a temporary folder).")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from dlcli.cli.common import quiet_frameworks
    from dlcli.recipe.loader import load_recipe
    from dlcli.train import train

    quiet_frameworks()
    with (contextlib.nullcontext(args.out) if args.out else tempfile.TemporaryDirectory()) as root:
        for name in args.recipes:
            run = Path(root) / name
            t0 = time.perf_counter()
            res = train(load_recipe(REPO / "recipes" / f"{name}.yaml"), run, overwrite=True, progress="none",
                        pipeline=False)
            lines = [f"{name}: {res.epochs_run} epochs in {time.perf_counter() - t0:.1f} s"]
            recipe = load_recipe(run / "recipe.yaml")
            if recipe.task == "gan":
                lines += _gan_lines(run, res.metrics)
            else:
                m = res.metrics["test"]
                lines.append(f"  test: loss (MSE + KL for a VAE) {m['loss']:.5f}, MAE {m.get('mae', float('nan')):.5f}")
            if recipe.anomaly is not None:
                lines += _anomaly_lines(run)
            lines += _export_lines(run)
            print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()

"""Anomaly detection by reconstruction error (a recipe's ``anomaly:`` section, task
reconstruction: an autoencoder or a VAE).

After training, :func:`calibrate` sets the threshold at a percentile of the validation
split's errors (normal examples only, with ``normal_classes``) and, when the test split's
labels mark anomalies, scores the flags there (ROC AUC, precision, recall, F1, false
positive rate). ``RUN_DIR/anomaly.json`` holds it; ``dlcli predict`` adds each example's
score and flag, ``dlcli evaluate`` the flag metrics; export and package carry the file.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

ANOMALY_FILE = "anomaly.json"


def errors(recon: np.ndarray, x: np.ndarray, score: str = "mse") -> np.ndarray:
    """The reconstruction error of every example (mean over its values)."""
    d = np.asarray(recon, np.float64).reshape(len(x), -1) - np.asarray(x, np.float64).reshape(len(x), -1)
    return np.mean(d * d, axis=1) if score == "mse" else np.mean(np.abs(d), axis=1)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """Area under the ROC curve: the chance that a random anomaly scores above a random
    normal example (ties count half); None without both kinds."""
    scores, positive = np.asarray(scores, np.float64), np.asarray(positive, bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def flag_metrics(scores: np.ndarray, positive: np.ndarray, threshold: float) -> dict[str, Any]:
    """Flags (score > threshold) against the truth ``positive`` (anomalies)."""
    flags, positive = np.asarray(scores) > threshold, np.asarray(positive, bool)
    tp, fp = int((flags & positive).sum()), int((flags & ~positive).sum())
    fn, tn = int((~flags & positive).sum()), int((~flags & ~positive).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"examples": len(flags), "anomalies": int(positive.sum()), "flagged": int(flags.sum()),
            "roc_auc": roc_auc(scores, positive), "precision": precision, "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "false_positive_rate": fp / (fp + tn) if fp + tn else 0.0,
            "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn}}


def truth(run, raw_y) -> np.ndarray | None:
    """Which examples are anomalies (labels outside ``anomaly.normal_classes``), if known."""
    spec = run.recipe.anomaly
    if spec is None or not spec.normal_classes or raw_y is None:
        return None
    normal = {str(c) for c in spec.normal_classes}
    return np.fromiter((str(v) not in normal for v in raw_y), bool, len(raw_y))


def split_scores(run, split: str, predict) -> tuple[np.ndarray, np.ndarray | None]:
    """Errors of ``predict`` (x -> reconstructions) on a split, and its anomaly truth."""
    from dlcli.rundir import run_split

    x, _, raw_y = run_split(run, split, raw_labels=True)
    return errors(predict(x), x, run.recipe.anomaly.score), truth(run, raw_y)


def calibrate(run_dir: Path, model, names: list[str]) -> dict[str, Any]:
    """The threshold from the validation split (else train), the test split's flag metrics,
    written to ``RUN_DIR/anomaly.json``. ``model``: the trained reconstruction model;
    ``names``: the run's splits."""
    from dlcli.atomic import write_json
    from dlcli.rundir import open_run

    run = open_run(run_dir)
    spec = run.recipe.anomaly

    def predict(x):
        return np.asarray(model.predict(x, verbose=0, batch_size=256))

    reference = "validation" if "validation" in names else "train"
    e, _ = split_scores(run, reference, predict)
    pct = spec.threshold_percentile()
    out: dict[str, Any] = {
        "format": "dlcli-anomaly/1", "score": spec.score, "threshold": float(np.percentile(e, pct)),
        "rule": (f"false_positive_rate {spec.false_positive_rate}" if spec.false_positive_rate is not None
                 else f"percentile {pct:g}"),
        "normal_classes": [str(c) for c in spec.normal_classes] if spec.normal_classes else None,
        "calibrated_on": {"split": reference, "examples": len(e), "mean": float(e.mean()),
                          "p50": float(np.median(e)), "max": float(e.max())}}
    if "test" in names and spec.normal_classes:
        scores, positive = split_scores(run, "test", predict)
        out["test"] = flag_metrics(scores, positive, out["threshold"])
    write_json(run_dir / ANOMALY_FILE, out)
    return out


def load(folder: Path) -> dict[str, Any] | None:
    """``anomaly.json`` of a run (or export) folder, if it has one."""
    path = Path(folder) / ANOMALY_FILE
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        float(data["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        from dlcli.errors import RunDirError

        raise RunDirError(f"{path}: cannot read the anomaly threshold: {exc}") from exc
    return data

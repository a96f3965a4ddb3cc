"""``evaluate(run_dir, split)``: the run's model on a data split, preprocessed as in training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class EvalResult:
    run_dir: Path
    split: str
    examples: int
    metrics: dict[str, float]
    data_changed: bool

    def to_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "split": self.split, "examples": self.examples,
                "metrics": self.metrics, "data_changed": self.data_changed}


def evaluate_artifact(run_dir: str | Path, artifact: str | Path, split: str = "test",
                      allow_code: bool = False) -> EvalResult:
    """An exported artifact, in its real runtime, on a split of the run's data (a SavedModel
    dlcli did not export only with ``allow_code``)."""
    import numpy as np

    from dlcli.errors import RunDirError, UsageError
    from dlcli.export.parity import task_metric
    from dlcli.rundir import find_artifact_run, load_artifact, open_run, run_split, takes_raw

    run = open_run(run_dir)
    try:
        owner = find_artifact_run(Path(artifact))
    except RunDirError:  # no manifest beside it: nothing says where it came from
        owner = run
    if owner.path.resolve() != run.path.resolve():
        raise UsageError(f"{artifact}: exported from {owner.path}, not from {run_dir}; evaluate it with its own run")
    runner = load_artifact(artifact, allow_code)
    x, y = run_split(run, split, normalize=not takes_raw(Path(artifact)))
    out = runner.predict(x)
    name, value = task_metric(out, y, run.recipe.task)
    metrics = {name: value}
    if run.recipe.task != "classification":
        metrics["mse"] = float(np.mean((out.reshape(len(out), -1) - y.reshape(len(y), -1)) ** 2))
    if not takes_raw(Path(artifact)):
        metrics.update(anomaly_metrics(run, split, runner.predict))
    return EvalResult(Path(run_dir), split, len(y), metrics, False)


def anomaly_metrics(run, split: str, predict) -> dict[str, float]:
    """With ``anomaly.json`` and labels that mark anomalies in ``split``: ROC AUC of the
    reconstruction error, and precision / recall / F1 / false positive rate of the flags."""
    from dlcli import anomaly

    calibrated = anomaly.load(run.path) if run.recipe.anomaly is not None else None
    if calibrated is None:
        return {}
    scores, positive = anomaly.split_scores(run, split, predict)
    if positive is None or positive.all() or not positive.any():
        return {}
    m = anomaly.flag_metrics(scores, positive, float(calibrated["threshold"]))
    return {f"anomaly_{k}": float(m[k]) for k in ("roc_auc", "precision", "recall", "f1", "false_positive_rate")}


def evaluate(run_dir: str | Path, split: str = "test", batch_size: int | None = None) -> EvalResult:
    """The run's Keras model on a split, read as in training (streamed for folder sources)."""
    from dlcli.rundir import open_run, run_data
    from dlcli.train.optim import needs_one_hot

    run = open_run(run_dir)
    recipe, pre = run.recipe, run.preprocessor
    data, bundle = run_data(run, split)
    k = len(pre.labels) if needs_one_hot(recipe.train.loss, recipe.task, recipe.train.metrics) else None
    model = run.load_model()
    res = model.evaluate(data.dataset(batch_size or recipe.train.batch_size, k), verbose=0, return_dict=True)
    res.update(anomaly_metrics(run, split, lambda x: model.predict(x, verbose=0, batch_size=256)))
    changed = False
    if recipe.data.source != "synthetic" and run.env.get("data_fingerprint"):
        changed = bundle.fingerprint != run.env["data_fingerprint"]
    return EvalResult(Path(run_dir), split, len(data), {k: float(v) for k, v in res.items()}, changed)

"""The report section of an anomaly detector (``anomaly.json``): the test split's errors of
normal examples and anomalies against the threshold, the ROC curve, the flag metrics."""

from __future__ import annotations

from dlcli.errors import DlcliError
from dlcli.report.context import _Ctx
from dlcli.report.figures import BLUE, GREY, ORANGE, RED, _figure
from dlcli.report.html import _kv_table


def _roc_points(scores, positive):
    import numpy as np

    order = np.argsort(-scores, kind="mergesort")
    pos = positive[order]
    tpr = np.concatenate([[0.0], np.cumsum(pos) / max(1, pos.sum())])
    fpr = np.concatenate([[0.0], np.cumsum(~pos) / max(1, (~pos).sum())])
    return fpr, tpr


def _figures(ctx: _Ctx, scores, positive, threshold: float, auc) -> list[str]:
    import numpy as np

    fig, ax = _figure(6.4, 3.6)
    bins = np.histogram_bin_edges(scores, bins=40)
    ax.hist(scores[~positive], bins=bins, color=BLUE, alpha=0.7, label="normal")
    ax.hist(scores[positive], bins=bins, color=ORANGE, alpha=0.7, label="anomaly")
    ax.axvline(threshold, ls="--", color=RED, label="threshold")
    ax.set_xlabel("reconstruction error per example")
    ax.set_ylabel("examples")
    ax.set_title("test split: normal examples and anomalies")
    ax.legend()
    imgs = [ctx.add_plot("anomaly_scores.png", "reconstruction error of normal and anomalous test examples", fig)]
    fig, ax = _figure(4.2, 4.0)
    fpr, tpr = _roc_points(scores, positive)
    ax.plot(fpr, tpr, color=BLUE, label=f"ROC AUC {auc:.3f}" if auc is not None else "ROC")
    ax.plot([0, 1], [0, 1], ls=":", color=GREY)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC of the reconstruction error")
    ax.legend(loc="lower right")
    imgs.append(ctx.add_plot("anomaly_roc.png", "ROC curve of the reconstruction error (test split)", fig))
    return imgs


def section(ctx: _Ctx, recipe) -> str:
    from dlcli import anomaly

    if recipe is None or recipe.anomaly is None:
        return ""
    try:
        calibrated = anomaly.load(ctx.run_dir)
    except DlcliError as exc:
        ctx.notes.append(str(exc))
        return ""
    if calibrated is None:
        ctx.notes.append("anomaly.json not found (the run did not finish?): no anomaly section")
        return ""
    test = calibrated.get("test") or {}
    rows = [("score", calibrated.get("score")), ("threshold", calibrated.get("threshold")),
            ("rule", calibrated.get("rule")), ("calibrated on", (calibrated.get("calibrated_on") or {}).get("split")),
            ("normal classes", ", ".join(calibrated.get("normal_classes") or []) or None),
            *[(k.replace("_", " "), test.get(k)) for k in ("examples", "anomalies", "flagged", "roc_auc", "precision",
                                                           "recall", "f1", "false_positive_rate")]]
    figs = []
    if test:
        try:
            from dlcli.rundir import open_run

            run = open_run(ctx.run_dir)
            model = run.load_model()
            scores, positive = anomaly.split_scores(run, "test", lambda x: model.predict(x, verbose=0))
            figs = _figures(ctx, scores, positive, float(calibrated["threshold"]), test.get("roc_auc"))
        except DlcliError as exc:
            ctx.notes.append(f"anomaly plots skipped: {exc}")
    return (f'<div class="grid wide"><div class="plots">{"".join(figs)}</div>'
            f'<div>{_kv_table("Anomaly detection (test split)", rows)}</div></div>')

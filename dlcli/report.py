"""``build_report(run_dir, out=None) -> Report``: one self-contained HTML page about a run.

The page shows the training curves (``history.csv``), the model on the test split
(confusion matrix and per-class precision / recall for classifiers, predicted vs true
for regression, the reconstruction-error histogram for reconstruction), the exported
artifacts (``export/manifest.json``) and the benchmark results (``benchmark.json``),
under a header with the recipe, the final metrics and the environment, with the
numbers behind every plot in tables.

Plots are PNGs drawn on matplotlib's Agg canvas (pyplot is never used), embedded as
base64 data URIs and also written beside the HTML in ``<stem>_files/``
(``report_files/`` for the default ``RUN_DIR/report.html``). Every file is written
atomically. An optional input that is missing or unreadable becomes a note on the
page, never an error. Importing this module imports neither TensorFlow nor matplotlib.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlcli.errors import DlcliError, RunDirError, UsageError
from dlcli.latency import delegation_text

MAX_SCATTER_POINTS = 5000
BLUE, ORANGE, RED, GREY = "#1f77b4", "#ff7f0e", "#c0392b", "#7f8c8d"


@dataclass
class Plot:
    name: str  # file name, e.g. confusion_matrix.png
    title: str
    png: bytes


@dataclass
class Report:
    run_dir: Path
    html: Path
    images: list[Path]
    sections: list[str]
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "html": str(self.html), "images": [str(p) for p in self.images],
                "sections": self.sections, "notes": self.notes}


@dataclass
class _Ctx:
    run_dir: Path
    notes: list[str] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)

    def add_plot(self, name: str, title: str, fig) -> str:
        plot = Plot(name, title, _png(fig))
        self.plots.append(plot)
        data = base64.b64encode(plot.png).decode("ascii")
        return f'<figure><img alt="{_e(title)}" src="data:image/png;base64,{data}"><figcaption>{_e(title)}</figcaption></figure>'


# ---------------------------------------------------------------- entry point
def build_report(run_dir: str | Path, out: str | Path | None = None) -> Report:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``)."""
    from dlcli.atomic import write_bytes, write_text
    from dlcli.runs import RUN_MARKERS

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found")
    if not any((run_dir / m).exists() for m in RUN_MARKERS):  # reading only: a partial run will do
        raise RunDirError(f"{run_dir}: not a dlcli run (no recipe.yaml or env.json)")
    out_given = out is not None
    out = Path(out) if out else run_dir / "report.html"
    if out.is_dir():
        out = out / "report.html"
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise UsageError("dlcli report draws its plots with matplotlib, which is not installed "
                         "(pip install 'matplotlib>=3.8')") from exc

    ctx = _Ctx(run_dir)
    recipe = _load_recipe(ctx)
    env = _read_json(ctx, run_dir / "env.json", "env.json") or {}
    metrics = _read_json(ctx, run_dir / "metrics.json", "metrics.json (the run did not finish?)") or {}
    sections: list[tuple[str, str, str]] = [("summary", "Run", _summary(recipe, env, metrics))]
    for key, title, fn in (("history", "Training curves", lambda: _history(ctx)),
                           ("test", "Model on held-out data", lambda: _evaluation(ctx, recipe)),
                           ("export", "Exported artifacts", lambda: _export(ctx, metrics)),
                           ("benchmark", "Benchmark", lambda: _benchmark(ctx))):
        body = fn()
        if body:
            sections.append((key, title, body))

    page = _page(recipe, env, sections, ctx.notes, run_dir)
    files_dir = out.parent / f"{out.stem}_files"
    try:
        images = [write_bytes(files_dir / p.name, p.png) for p in ctx.plots]
        for stale in files_dir.glob("*.png") if files_dir.is_dir() else []:
            if stale not in images:
                stale.unlink()
        write_text(out, page)
    except OSError as exc:
        error = UsageError if out_given else RunDirError
        raise error(f"{out}: cannot write the report: {exc.strerror or exc}") from exc
    return Report(run_dir, out, images, [s[0] for s in sections], ctx.notes)


# ---------------------------------------------------------------- inputs
def _load_recipe(ctx: _Ctx):
    from dlcli.recipe.loader import load_recipe

    path = ctx.run_dir / "recipe.yaml"
    if not path.exists():
        ctx.notes.append("recipe.yaml not found: no recipe summary and no test-set evaluation")
        return None
    try:
        return load_recipe(path)
    except DlcliError as exc:
        ctx.notes.append(f"recipe.yaml cannot be loaded ({exc}): no recipe summary and no test-set evaluation")
        return None


def _read_json(ctx: _Ctx, path: Path, what: str) -> Any:
    if not path.exists():
        ctx.notes.append(f"{what} not found")
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        ctx.notes.append(f"{path.name} cannot be read: {str(exc).splitlines()[0]}")
        return None


def _read_history(path: Path) -> tuple[list[str], list[dict[str, float]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [{k: _float(v) for k, v in row.items() if k} for row in reader]
        return [c for c in (reader.fieldnames or []) if c], rows


def _float(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


# ---------------------------------------------------------------- sections
def _summary(recipe, env: dict, metrics: dict) -> str:
    parts = []
    if recipe is not None:
        r, t = recipe, recipe.train
        sizes = env.get("data_sizes") or {}
        rows = [("task", r.task), ("data", _data_text(r.data)),
                ("examples", " / ".join(f"{k} {v:,}" for k, v in sizes.items()) if sizes else None),
                ("model", _model_text(r.model)), ("parameters", env.get("parameters")),
                ("epochs", f"{env['epochs_run']} of {t.epochs}" if "epochs_run" in env else t.epochs),
                ("batch size", t.batch_size), ("optimizer", t.optimizer.name),
                ("learning rate", _lr_text(t.optimizer.learning_rate)),
                ("loss", t.loss.name + (" (from logits)" if t.loss.from_logits else "")),
                ("metrics", ", ".join(t.metrics)), ("seed", r.seed), ("mixed precision", env.get("mixed_precision"))]
        parts.append(_kv_table("Recipe", rows))
    if metrics:
        names = list(dict.fromkeys(k for m in metrics.values() if isinstance(m, dict) for k in m))
        rows = [[split, *[m.get(n) for n in names]] for split, m in metrics.items() if isinstance(m, dict)]
        parts.append(f"<div><h3>Final metrics</h3>{_table(['split', *names], rows)}</div>")
    if env:
        keys = ["status", "error", "started", "ended", "fit_seconds", "samples_per_second", "python", "tensorflow",
                "keras", "numpy", "dlcli", "devices", "strategy", "platform", "hostname", "data_fingerprint", "recipe_hash",
                "jit_compile", "argv"]
        rows = [(k, " ".join(map(str, env[k])) if k == "argv" else env[k]) for k in keys if k in env]
        parts.append(_kv_table("Environment", rows))
    return f'<div class="grid">{"".join(parts)}</div>'


def _history(ctx: _Ctx) -> str:
    path = ctx.run_dir / "history.csv"
    if not path.exists():
        ctx.notes.append("history.csv not found (train.callbacks.csv_history off, or no epoch finished)")
        return ""
    try:
        columns, rows = _read_history(path)
    except (OSError, csv.Error) as exc:
        ctx.notes.append(f"history.csv cannot be read: {exc}")
        return ""
    if not rows:
        ctx.notes.append("history.csv has no epochs")
        return ""
    epochs = [int(r["epoch"]) if not math.isnan(r.get("epoch", math.nan)) else i + 1 for i, r in enumerate(rows)]
    bases = [c for c in columns if c not in ("epoch", "learning_rate") and not c.startswith("val_")]
    if not any(c.startswith("val_") for c in columns):
        ctx.notes.append("no validation split: the curves show training values only")
    figs = []
    for base in bases:
        fig, ax = _figure(6.4, 3.6)
        for col, label, color, style in ((base, "train", BLUE, "-"), (f"val_{base}", "validation", ORANGE, "--")):
            if col in columns:
                ax.plot(epochs, [r.get(col, math.nan) for r in rows], style, color=color, label=label,
                        marker="o" if len(rows) <= 30 else None, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(base)
        ax.set_title(f"{base} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        figs.append(ctx.add_plot(f"history_{_safe(base)}.png", f"{base} per epoch (train and validation)", fig))
    lrs = [r.get("learning_rate", math.nan) for r in rows]
    if "learning_rate" in columns and len({v for v in lrs if not math.isnan(v)}) > 1:
        fig, ax = _figure(6.4, 3.0)
        ax.plot(epochs, lrs, color=GREY)
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate")
        ax.set_title("learning rate at the end of each epoch")
        ax.grid(alpha=0.3)
        figs.append(ctx.add_plot("learning_rate.png", "learning rate per epoch", fig))
    table = _table(columns, [[r.get(c) if c != "epoch" else e for c in columns] for e, r in zip(epochs, rows)])
    return f'<div class="plots">{"".join(figs)}</div>{_details(f"history.csv ({len(rows)} epochs)", table)}'


def _evaluation(ctx: _Ctx, recipe) -> str:
    if recipe is None:
        return ""
    if not (ctx.run_dir / "model.keras").exists():
        ctx.notes.append("model.keras not found (the run did not finish?): no test-set evaluation")
        return ""
    try:
        split, x, y, pred, labels = _predict(ctx.run_dir)
    except DlcliError as exc:
        ctx.notes.append(f"test-set evaluation skipped: {exc}")
        return ""
    head = f"<p>{split} split, {len(y):,} examples, through the run's saved preprocessing.</p>"
    if recipe.task == "classification":
        return head + _classification(ctx, y, pred, labels, recipe.train.loss.from_logits)
    if recipe.task == "regression":
        return head + _regression(ctx, y, pred)
    return head + _reconstruction(ctx, x, pred)


def _predict(run_dir: Path):
    import numpy as np

    from dlcli.inspect import open_run, run_split

    run = open_run(run_dir)
    try:
        split, (x, y) = "test", run_split(run, "test")
    except UsageError:
        split, (x, y) = "validation", run_split(run, "validation")
    pred = run.load_model().predict(x, batch_size=256, verbose=0)
    if isinstance(pred, (list, tuple)):
        pred = pred[0]
    labels = run.preprocessor.labels
    if not labels and (run_dir / "labels.txt").exists():
        labels = (run_dir / "labels.txt").read_text().splitlines()
    return split, x, np.asarray(y), np.asarray(pred), labels


def _classification(ctx: _Ctx, y, pred, labels, from_logits: bool) -> str:
    import numpy as np

    pred = pred.reshape(len(pred), -1)
    if pred.shape[1] == 1:  # one sigmoid (or logit) output
        guess = (pred[:, 0] > (0.0 if from_logits else 0.5)).astype(np.int64)
    else:
        guess = pred.argmax(-1)
    y = y.reshape(len(y), -1).argmax(-1) if y.ndim > 1 and y.shape[-1] > 1 else y.reshape(-1).astype(np.int64)
    k = max(len(labels or []), int(max(y.max(initial=0), guess.max(initial=0))) + 1, 2)
    names = list(labels or [])[:k] + [str(i) for i in range(len(labels or []), k)]
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, guess), 1)
    fig = _confusion_figure(cm, names)
    img = ctx.add_plot("confusion_matrix.png", "confusion matrix (rows: true class, columns: predicted)", fig)
    rows, precisions, recalls = [], [], []
    for i, name in enumerate(names):
        tp, support, predicted = cm[i, i], cm[i].sum(), cm[:, i].sum()
        p = tp / predicted if predicted else None
        r = tp / support if support else None
        f1 = 2 * p * r / (p + r) if p and r else (0.0 if p is not None and r is not None else None)
        precisions += [p] if p is not None else []
        recalls += [r] if r is not None else []
        rows.append([name, int(support), int(predicted), p, r, f1])
    acc = float(np.trace(cm) / cm.sum()) if cm.sum() else None
    summary = _kv_table("Summary", [("accuracy", acc), ("macro precision", _mean(precisions)),
                                    ("macro recall", _mean(recalls)), ("classes", k)])
    per_class = f"<div><h3>Per class</h3>{_table(['class', 'support', 'predicted', 'precision', 'recall', 'F1'], rows)}</div>"
    cm_table = _table(["true \\ predicted", *names], [[n, *map(int, cm[i])] for i, n in enumerate(names)])
    return (f'<div class="grid wide">{img}<div>{summary}{per_class}</div></div>'
            + _details("confusion matrix counts", cm_table))


def _regression(ctx: _Ctx, y, pred) -> str:
    import numpy as np

    yt, yp = y.reshape(len(y), -1).astype(np.float64), pred.reshape(len(pred), -1).astype(np.float64)
    if yt.shape != yp.shape:
        ctx.notes.append(f"predictions {pred.shape} do not match the targets {y.shape}: no regression plot")
        return ""
    err = yp - yt
    sst = float(np.sum((yt - yt.mean(0)) ** 2))
    stats = [("examples", len(yt)), ("outputs", yt.shape[1]), ("MAE", float(np.mean(np.abs(err)))),
             ("RMSE", float(np.sqrt(np.mean(err**2)))),
             ("R²", 1 - float(np.sum(err**2)) / sst if sst > 0 else None), ("mean error (bias)", float(err.mean()))]
    t, p = yt.reshape(-1), yp.reshape(-1)
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(t), MAX_SCATTER_POINTS, replace=False)) if len(t) > MAX_SCATTER_POINTS else slice(None)
    fig, ax = _figure(5.2, 5.0)
    ax.scatter(t[keep], p[keep], s=8, alpha=0.5, color=BLUE, edgecolors="none")
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], "--", color=GREY, label="predicted = true")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title("predicted vs true")
    ax.grid(alpha=0.3)
    ax.legend()
    img = ctx.add_plot("predicted_vs_true.png", "predicted vs true on held-out data", fig)
    # the numbers behind the scatter: error by decile of the true value
    edges = np.unique(np.quantile(t, np.linspace(0, 1, 11)))
    bins = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = []
    for b in range(max(len(edges) - 1, 1)):
        m = bins == b
        if m.any():
            rows.append([f"{edges[b]:.4g} .. {edges[min(b + 1, len(edges) - 1)]:.4g}", int(m.sum()),
                         float(t[m].mean()), float(p[m].mean()), float(np.mean(np.abs(p[m] - t[m])))])
    deciles = _table(["true value range", "examples", "mean true", "mean predicted", "MAE"], rows)
    return f'<div class="grid wide">{img}<div>{_kv_table("Summary", stats)}</div></div>' + _details(
        "error by decile of the true value", deciles)


def _reconstruction(ctx: _Ctx, x, pred) -> str:
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    xt, xp = x.reshape(len(x), -1).astype(np.float64), pred.reshape(len(pred), -1).astype(np.float64)
    if xt.shape != xp.shape:
        ctx.notes.append(f"reconstructions {pred.shape} do not match the inputs {x.shape}: no error histogram")
        return ""
    mse = np.mean((xp - xt) ** 2, axis=1)
    fig, ax = _figure(6.4, 3.6)
    counts, edges, _ = ax.hist(mse, bins=30, color=BLUE, alpha=0.85)
    ax.axvline(float(np.quantile(mse, 0.95)), ls="--", color=RED, label="95th percentile")
    ax.set_xlabel("reconstruction error (MSE per example)")
    ax.set_ylabel("examples")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("reconstruction error")
    ax.legend()
    imgs = [ctx.add_plot("reconstruction_error.png", "reconstruction error per example (histogram)", fig)]
    if (x.ndim == 4 and x.shape[-1] in (1, 3)) or x.ndim == 3:  # images: show a few
        imgs.append(_examples_figure(ctx, x, pred))
    q = {f"p{int(p * 100)}": float(np.quantile(mse, p)) for p in (0.5, 0.9, 0.95, 0.99)}
    stats = [("examples", len(mse)), ("mean", float(mse.mean())), *q.items(), ("max", float(mse.max()))]
    hist = _table(["from", "to", "examples"], [[float(a), float(b), int(c)] for a, b, c in
                                              zip(edges[:-1], edges[1:], counts)])
    return (f'<div class="grid wide"><div class="plots">{"".join(imgs)}</div>'
            f'<div>{_kv_table("Summary", stats)}</div></div>' + _details("histogram bins", hist))


def _export(ctx: _Ctx, metrics: dict) -> str:
    path = ctx.run_dir / "export" / "manifest.json"
    if not path.exists():
        return ('<p class="muted">No export/manifest.json: run <code>dlcli export RUN_DIR</code> to add '
                "artifact sizes and metrics here.</p>")
    man = _read_json(ctx, path, "export/manifest.json")
    arts = man.get("artifacts") if isinstance(man, dict) else None
    if not isinstance(arts, list):
        ctx.notes.append("export/manifest.json has no artifacts list")
        return ""
    keras = man.get("keras") or {}
    mname = keras.get("metric") or "metric"
    model_file = ctx.run_dir / "model.keras"
    names, values, failed = ["model.keras (Keras)"], [keras.get("value")], [False]
    sizes = [model_file.stat().st_size if model_file.exists() else None]
    ref = next((a.get("size_bytes") for a in arts if a.get("name") == "model_float32.tflite"), None)
    rows = [["model.keras", "keras", "none", "keras", "reference", _Num(_size(sizes[0])), "", keras.get("value"), None, None]]
    for a in arts:
        c = a.get("checks") or {}
        size = a.get("size_bytes")
        ok = a.get("status") == "passed"
        names.append(a.get("name", "?"))
        sizes.append(size)
        values.append(c.get("artifact_metric"))
        failed.append(not ok)
        ratio = f"{size / ref:.2f}x" if ref and size else ""
        status = _Raw(f'<span class="{"ok" if ok else "bad"}">{_e(a.get("status", "?"))}</span>'
                      + (f' <span class="muted">{_e(a.get("error", ""))}</span>' if a.get("error") else ""))
        rows.append([a.get("name"), a.get("format"), a.get("quantization"), a.get("runtime"), status,
                     _Num(_size(size)), _Num(ratio), c.get("artifact_metric"), c.get("max_abs_error"),
                     c.get("top1_agreement"), delegation_text(a.get("delegation"))])
    fig = _artifact_figure(names, sizes, values, failed, mname, keras.get("value"))
    img = ctx.add_plot("export_artifacts.png", f"exported artifacts: size and test {mname}", fig)
    table = _table(["artifact", "format", "quantization", "runtime", "status", "size", "vs float32 TFLite",
                    f"test {mname}", "max abs error vs Keras", "top-1 agreement", "delegation"], rows)
    info = (f"<p>{_e(path)}: created {_e(man.get('created', '?'))}, parity gate "
            f"{'passed' if man.get('passed') else 'failed'}; {mname} on {keras.get('samples', '?')} test examples.</p>")
    return info + img + table


def _benchmark(ctx: _Ctx) -> str:
    path = ctx.run_dir / "benchmark.json"
    if not path.exists():
        return '<p class="muted">No benchmark.json: run <code>dlcli benchmark RUN_DIR</code> to add latency here.</p>'
    bench = _read_json(ctx, path, "benchmark.json")
    if not isinstance(bench, dict) or not str(bench.get("format", "")).startswith("dlcli-benchmark/"):
        ctx.notes.append("benchmark.json is not a dlcli benchmark (format dlcli-benchmark/1 expected)")
        return ""
    results = [r for r in bench.get("results") or [] if isinstance(r, dict)]
    if not results:
        ctx.notes.append("benchmark.json has no results")
        return ""
    mname = next((r["metric"].get("name") for r in results if isinstance(r.get("metric"), dict)), "metric")
    names, sizes, p50, values, rows = [], [], [], [], []
    for r in results:
        lat = r.get("latency_ms") or {}
        metric = r.get("metric") or {}
        names.append(r.get("name", "?"))
        sizes.append(r.get("size_bytes"))
        p50.append(lat.get("p50"))
        values.append(metric.get("value"))
        native = r.get("native") if isinstance(r.get("native"), dict) else None
        rows.append([r.get("name"), r.get("format"), r.get("quantization"), r.get("runtime"), _Num(_size(r.get("size_bytes"))),
                     r.get("load_seconds"), lat.get("p50"), lat.get("p95"), lat.get("mean"),
                     (native.get("latency_ms") or {}).get("p50") if native else None, r.get("python_overhead_ms"),
                     r.get("throughput_samples_per_s"), _Num(_size(r.get("peak_memory_bytes"))), metric.get("value"),
                     delegation_text(native)])
    fig = _benchmark_figure(names, sizes, p50, values, mname)
    img = ctx.add_plot("benchmark.png", f"benchmark: size, p50 latency (batch 1) and test {mname}", fig)
    table = _table(["model", "format", "quantization", "runtime", "size", "load s", "p50 ms", "p95 ms", "mean ms",
                    "native p50 ms", "Python overhead ms", f"samples/s (batch {bench.get('batch_size', '?')})",
                    "peak memory", f"test {mname}", "delegation"], rows)
    verdict = "passed" if bench.get("passed") else "failed"
    fails = "".join(f"<li>{_e(f)}</li>" for f in bench.get("failures") or [])
    info = (f"<p>{_e(path)}: created {_e(bench.get('created', '?'))}, {bench.get('runs', '?')} timed runs after "
            f"{bench.get('warmup', '?')} warm-up, {bench.get('threads', '?')} thread(s); p50/p95 through Python, "
            "native p50 timed by the runtime (LiteRT CompiledModel, onnxruntime io_binding); "
            f"thresholds {_e(json.dumps(bench.get('thresholds') or {}))}: "
            f'<span class="{"ok" if bench.get("passed") else "bad"}">{verdict}</span></p>'
            + (f"<ul>{fails}</ul>" if fails else ""))
    return info + img + table


# ---------------------------------------------------------------- figures
def _figure(w: float, h: float, nrows: int = 1, ncols: int = 1, sharey: bool = False, grid: bool = False):
    """A matplotlib Figure and its axes (a 2-D array with ``grid``), with no pyplot state behind it."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    return fig, fig.subplots(nrows, ncols, sharey=sharey, squeeze=not grid)


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buf = io.BytesIO()
    FigureCanvasAgg(fig).print_png(buf, metadata={"Software": None})
    return buf.getvalue()


def _confusion_figure(cm, names: list[str]):
    import numpy as np

    k = len(names)
    side = min(3.0 + 0.35 * k, 12.0)
    fig, ax = _figure(side + 1.2, side)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of the true class")
    ticks = np.arange(0, k, max(1, k // 40))
    long = max((len(n) for n in names), default=0) > 3
    ax.set_xticks(ticks, [names[i] for i in ticks], rotation=45 if long else 0, ha="right" if long else "center")
    ax.set_yticks(ticks, [names[i] for i in ticks])
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"confusion matrix ({int(cm.sum()):,} examples)")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if norm[i, j] > 0.5 else "black")
    return fig


def _examples_figure(ctx: _Ctx, x, pred) -> str:
    import numpy as np

    n = min(8, len(x))
    imgs = [np.asarray(a[:n], dtype=np.float64).reshape(n, *x.shape[1:]) for a in (x, pred)]
    lo, hi = float(imgs[0].min()), float(imgs[0].max())
    scale = hi - lo if hi > lo else 1.0  # one grey scale for inputs and reconstructions: the inputs' range
    fig, grid = _figure(1.1 * n + 0.4, 2.6, nrows=2, ncols=n, grid=True)
    for row, (arr, label) in enumerate(zip(imgs, ("input", "reconstruction"))):
        for i in range(n):
            ax = grid[row, i]
            img = arr[i][..., 0] if arr[i].ndim == 3 and arr[i].shape[-1] == 1 else arr[i]
            ax.imshow(np.clip((img - lo) / scale, 0, 1), cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(label, fontsize=8)
    return ctx.add_plot("reconstruction_examples.png", f"first {n} held-out inputs and their reconstructions", fig)


def _artifact_figure(names, sizes, values, failed, mname: str, ref):
    fig, (a1, a2) = _figure(9.0, 1.2 + 0.45 * len(names), ncols=2, sharey=True)
    y = list(range(len(names)))
    colors = [RED if f else BLUE for f in failed]
    _hbar(a1, y, [s / 1000 if s else 0 for s in sizes], colors, "size (kB)", [_size(s) for s in sizes])
    a1.set_yticks(y, names)
    a1.invert_yaxis()
    _dots(a2, y, values, colors, f"test {mname}", ref)
    return fig


def _benchmark_figure(names, sizes, p50, values, mname: str):
    fig, (a1, a2, a3) = _figure(12.0, 1.2 + 0.45 * len(names), ncols=3, sharey=True)
    y = list(range(len(names)))
    _hbar(a1, y, [s / 1000 if s else 0 for s in sizes], [BLUE] * len(y), "size (kB)", [_size(s) for s in sizes])
    _hbar(a2, y, [v or 0 for v in p50], [ORANGE] * len(y), "p50 latency, batch 1 (ms)",
          [f"{v:.3g}" if v is not None else "n/a" for v in p50])
    a1.set_yticks(y, names)
    a1.invert_yaxis()
    _dots(a3, y, values, [BLUE] * len(y), f"test {mname}", None)
    return fig


def _hbar(ax, y, vals, colors, xlabel: str, texts) -> None:
    ax.barh(y, vals, color=colors)
    top = max(vals, default=0) or 1
    for yi, v, t in zip(y, vals, texts):
        ax.text(v + top * 0.01, yi, t, va="center", fontsize=8)
    ax.set_xlim(0, top * 1.3)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def _dots(ax, y, values, colors, xlabel: str, ref) -> None:
    from matplotlib.ticker import MaxNLocator

    pts = [(yi, v, c) for yi, v, c in zip(y, values, colors) if v is not None]
    if pts:
        ax.scatter([p[1] for p in pts], [p[0] for p in pts], c=[p[2] for p in pts], zorder=3)
        for yi, v, _ in pts:
            ax.annotate(_num(float(v)), (v, yi), textcoords="offset points", xytext=(6, 4), fontsize=8)
    if ref is not None:
        ax.axvline(ref, ls="--", color=GREY, label="Keras model")
        ax.legend(loc="lower right", fontsize=8)
    ax.margins(x=0.25)
    known = [v for v in [*values, ref] if v is not None]
    if known and xlabel.endswith("accuracy"):  # never an axis past 100 %
        lo, hi = min(known), max(known)
        pad = max(0.01, 0.25 * (hi - lo))
        ax.set_xlim(max(0.0, lo - pad), min(1.0 + 0.2 * pad, hi + pad))
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


# ---------------------------------------------------------------- HTML
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#222;
 max-width:1200px;margin:1.5em auto;padding:0 1em;line-height:1.4}
h1{margin-bottom:0}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}h3{margin:.6em 0 .3em}
.sub{color:#555;margin-top:.2em}.muted{color:#777}.ok{color:#1e7d32;font-weight:600}.bad{color:#c0392b;font-weight:600}
table{border-collapse:collapse;font-size:.86em;margin:.4em 0}th,td{padding:.22em .6em;border-bottom:1px solid #e3e3e3;
 text-align:left;vertical-align:top}th{background:#f4f6f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr:nth-child(even) td{background:#fafbfc}td{word-break:break-word;max-width:38em}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(330px,1fr));gap:1.2em;align-items:start}
.grid.wide{grid-template-columns:repeat(auto-fit,minmax(420px,1fr))}
.plots{display:flex;flex-wrap:wrap;gap:1em}figure{margin:.3em 0}img{max-width:100%;height:auto}
figcaption{font-size:.8em;color:#666}details{margin:.6em 0}summary{cursor:pointer;color:#1f5f99}
code{background:#f4f6f8;padding:0 .25em;border-radius:3px}
"""


def _page(recipe, env: dict, sections, notes: list[str], run_dir: Path) -> str:
    import dlcli

    name = recipe.name if recipe is not None else run_dir.name
    desc = recipe.description if recipe is not None else ""
    status = env.get("status", "unknown")
    cls = "ok" if status == "completed" else "bad"
    body = [f"<h1>{_e(name)}</h1>",
            (f'<p class="sub">{_e(desc)} <br>run <code>{_e(run_dir.resolve())}</code> · status '
             f'<span class="{cls}">{_e(status)}</span></p>')]
    for key, title, html_body in sections:
        body.append(f'<section id="{key}">' + (f"<h2>{_e(title)}</h2>" if key != "summary" else "") + html_body
                    + "</section>")
    if notes:
        body.append("<section id=\"notes\"><h2>Notes</h2><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes)
                    + "</ul></section>")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %z")
    body.append(f'<p class="muted">Generated by dlcli {_e(dlcli.__version__)} on {_e(stamp)}.</p>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{_e(name)}: dlcli report</title><style>{CSS}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


class _Raw(str):
    """A table cell that is already HTML."""


class _Num(str):
    """A preformatted number: right-aligned."""


def _cell(v: Any) -> str:
    if isinstance(v, _Raw):
        return f"<td>{v}</td>"
    if isinstance(v, _Num):
        return f'<td class="num">{_e(v)}</td>'
    if v is None:
        return '<td class="num muted">–</td>'
    if isinstance(v, bool):
        return f"<td>{'yes' if v else 'no'}</td>"
    if isinstance(v, int):
        return f'<td class="num">{v:,}</td>'
    if isinstance(v, float):
        return f'<td class="num">{_num(v)}</td>'
    if isinstance(v, list):
        return f"<td>{_e(', '.join(map(str, v)))}</td>"
    if isinstance(v, dict):
        return f"<td>{_e(', '.join(f'{k} {x}' for k, x in v.items()))}</td>"
    return f"<td>{_e(v)}</td>"


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _kv_table(title: str, rows) -> str:
    body = "".join(f"<tr><th>{_e(k)}</th>{_cell(v)}</tr>" for k, v in rows if v is not None and v != "")
    return f"<div><h3>{_e(title)}</h3><table><tbody>{body}</tbody></table></div>"


def _details(summary: str, inner: str) -> str:
    return f"<details><summary>{_e(summary)}</summary>{inner}</details>"


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


# ---------------------------------------------------------------- text helpers
def _size(n: Any) -> str:
    if not isinstance(n, (int, float)) or n <= 0:
        return "–"
    if n >= 1e6:
        return f"{n / 1e6:.2f} MB"
    return f"{n / 1e3:.1f} kB"


def _num(v: float) -> str:
    if math.isnan(v):
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.1f}"
    return f"{v:.4f}" if v == 0 or abs(v) >= 1e-3 else f"{v:.3e}"


def _mean(xs: list[float]) -> float | None:
    return float(sum(xs) / len(xs)) if xs else None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _lr_text(lr: Any) -> str:
    if isinstance(lr, (int, float)):
        return f"{lr:g}"
    d = lr.model_dump()
    kind = d.pop("schedule", "schedule")
    return f"{kind} (" + ", ".join(f"{k} {v}" for k, v in d.items()) + ")"


def _data_text(d: Any) -> str:
    if d.source == "synthetic":
        return f"synthetic {d.kind}: {d.samples:,} examples of shape {list(d.shape)}"
    return f"{d.source}: {d.path}"


def _model_text(m: Any) -> str:
    arch = getattr(m, "architecture", None)
    if arch:
        return str(arch)
    if getattr(m, "layers", None) is not None:
        return f"{len(m.layers)} layers (Sequential)"
    if getattr(m, "graph", None) is not None:
        return f"graph of {len(m.graph.nodes)} nodes"
    if getattr(m, "application", None) is not None:
        return f"keras.applications {m.application.name} + head"
    return f"code {getattr(m, 'code', '?')}"

"""One function per section of the report: each returns its HTML (tables, figures) or "".
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from dlcli.errors import DlcliError, UsageError
from dlcli.latency import delegation_text
from dlcli.report.context import _Ctx, _read_history, _read_json
from dlcli.report.figures import (
    BLUE,
    GREY,
    ORANGE,
    RED,
    _artifact_figure,
    _benchmark_figure,
    _confusion_figure,
    _examples_figure,
    _figure,
)
from dlcli.report.html import (
    _data_text,
    _details,
    _e,
    _kv_table,
    _lr_text,
    _mean,
    _model_text,
    _Num,
    _Raw,
    _safe,
    _size,
    _table,
)

MAX_SCATTER_POINTS = 5000


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
    # every quantity once, including those measured on validation data only (a GAN's score)
    bases = list(dict.fromkeys(c.removeprefix("val_") for c in columns
                               if c not in ("epoch", "learning_rate")))
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
    table = _table(columns, [[r.get(c) if c != "epoch" else e for c in columns] for e, r in zip(epochs, rows, strict=True)])
    return f'<div class="plots">{"".join(figs)}</div>{_details(f"history.csv ({len(rows)} epochs)", table)}'


def _evaluation(ctx: _Ctx, recipe) -> str:
    if recipe is None or recipe.task == "gan":  # a generator: its samples and scores (report.generative)
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

    from dlcli.rundir import open_run, run_split

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
                                              zip(edges[:-1], edges[1:], counts, strict=True)])
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
    return info + img + table + "".join(_sensitivity(ctx, a) for a in arts if a.get("sensitivity"))


def _sensitivity(ctx: _Ctx, a: dict) -> str:
    """The per-layer quantization error of an int8 file (export --explain / --fallback auto)."""
    if a.get("format") == "onnx":
        return _onnx_sensitivity(ctx, a)
    layers = [e for e in a["sensitivity"] if isinstance(e, dict) and e.get("rmse_over_scale") is not None]
    if not layers:
        return ""
    kept = set((a.get("fallback") or {}).get("layers") or [])
    labels = [f"{e.get('op')} {str(e.get('tensor'))[:40]}" for e in layers][::-1]
    vals = [e["rmse_over_scale"] for e in layers][::-1]
    colors = [RED if e.get("tensor") in kept else (ORANGE if e.get("suspect") else BLUE) for e in layers][::-1]
    fig, ax = _figure(7.0, 0.6 + 0.3 * len(layers))
    ax.barh(labels, vals, color=colors)
    ax.axvline(0.289, color=GREY, linestyle=":", label="rounding alone (0.29)")
    ax.axvline(0.7, color=ORANGE, linestyle="--", label="suspect (0.7)")
    ax.set_xlabel("rmse / scale (quantization steps)")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize=7)
    name = _safe(str(a.get("name", "int8")))
    img = ctx.add_plot(f"sensitivity_{name}.png", f"{a.get('name')}: quantization error per layer "
                       "(red: kept in float by --fallback auto)", fig)
    rows = [[e.get("op"), e.get("tensor"), e.get("rmse_over_scale"), e.get("max_abs_error"), e.get("scale"),
             "kept in float" if e.get("tensor") in kept else ("suspect" if e.get("suspect") else "")] for e in layers]
    steps = (a.get("fallback") or {}).get("steps") or []
    fb = _table(["layers in float", "layer added", "size", "native p50 ms", "gate"],
                [[s.get("float_layers"), s.get("op"), _Num(_size(s.get("size_bytes"))), s.get("native_p50_ms"),
                  "pass" if s.get("passed") else "; ".join(s.get("failures") or [])] for s in steps]) if steps else ""
    return (f"<h3>{_e(a.get('name'))}: which layers int8 hurts</h3>" + img
            + _details("per-layer numbers", _table(["op", "output tensor", "rmse/scale", "max abs error", "scale", ""],
                                                   rows)) + (f"<h3>--fallback auto</h3>{fb}" if fb else ""))


def _onnx_sensitivity(ctx: _Ctx, a: dict) -> str:
    """int8 ONNX: each tensor's SQNR (dB) from onnxruntime's QDQ debugging, the worst 30."""
    tensors = [e for e in a["sensitivity"] if isinstance(e, dict) and e.get("qdq_sqnr_db") is not None][:30]
    if not tensors:
        return ""
    kept = set((a.get("fallback") or {}).get("nodes") or [])
    labels = [f"{e.get('op')} {str(e.get('tensor'))[:40]}" for e in tensors][::-1]
    colors = [RED if kept & set(e.get("nodes") or []) else BLUE for e in tensors][::-1]
    fig, ax = _figure(7.0, 0.6 + 0.3 * len(tensors))
    ax.barh(labels, [_rank_db(e) for e in tensors][::-1], color=colors)
    ax.set_xlabel("SQNR of the tensor's own QDQ pair, its worst channel if lower (dB, higher is better)")
    ax.tick_params(axis="y", labelsize=7)
    name = _safe(str(a.get("name", "int8")))
    img = ctx.add_plot(f"sensitivity_{name}.png", f"{a.get('name')}: quantization noise per tensor, worst first "
                       "(red: its nodes kept in float by --fallback auto)", fig)
    rows = [[e.get("op"), e.get("tensor"), e.get("qdq_sqnr_db"), e.get("channel_sqnr_db"), e.get("model_sqnr_db"),
             "kept in float" if kept & set(e.get("nodes") or []) else ""] for e in tensors]
    return (f"<h3>{_e(a.get('name'))}: which tensors int8 hurts</h3>" + img
            + _details("per-tensor numbers", _table(["op", "tensor", "own QDQ SQNR dB", "worst channel dB",
                                                     "vs float model dB", ""], rows)))


def _rank_db(e: dict) -> float:
    """The lower of a tensor's SQNR and its worst channel's (a manifest from before
    ``channel_sqnr_db`` has only the first)."""
    channel = e.get("channel_sqnr_db")
    return min(e["qdq_sqnr_db"], channel) if isinstance(channel, (int, float)) else e["qdq_sqnr_db"]


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


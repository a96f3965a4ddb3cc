"""The report's figures, drawn on matplotlib's Agg canvas (pyplot is never used)."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

from dlcli.report.html import _num, _size

if TYPE_CHECKING:
    from dlcli.report.context import _Ctx

BLUE, ORANGE, RED, GREY = "#1f77b4", "#ff7f0e", "#c0392b", "#7f8c8d"


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
    for row, (arr, label) in enumerate(zip(imgs, ("input", "reconstruction"), strict=True)):
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
    for yi, v, t in zip(y, vals, texts, strict=True):
        ax.text(v + top * 0.01, yi, t, va="center", fontsize=8)
    ax.set_xlim(0, top * 1.3)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)


def _dots(ax, y, values, colors, xlabel: str, ref) -> None:
    from matplotlib.ticker import MaxNLocator

    pts = [(yi, v, c) for yi, v, c in zip(y, values, colors, strict=True) if v is not None]
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


"""The report section of a generative run: a GAN's sample grids the trainer wrote (first,
best and last epoch, and the kept generator) beside the judge's scores; a VAE's new
examples, drawn from its decoder."""

from __future__ import annotations

import csv
import math

from dlcli.report.context import _Ctx, _read_history
from dlcli.report.html import _e, _table

SCORES = ("val_frechet_distance", "frechet_distance")


def _epochs(ctx: _Ctx) -> tuple[str | None, list[dict[str, float]]]:
    path = ctx.run_dir / "history.csv"
    try:
        columns, rows = _read_history(path) if path.exists() else ([], [])
    except (OSError, csv.Error):
        return None, []
    score = next((c for c in SCORES if c in columns), None)
    return score, rows


def _grid(ctx: _Ctx, name: str, title: str) -> str:
    path = ctx.run_dir / "samples" / name
    try:
        png = path.read_bytes()
    except OSError:
        ctx.notes.append(f"samples/{name} not found: no sample grid for {title}")
        return ""
    return ctx.add_png(f"samples_{name}", title, png)


def _vae(ctx: _Ctx, recipe) -> str:
    import numpy as np

    from dlcli.errors import DlcliError
    from dlcli.gan.sample import vae_decoder
    from dlcli.gan.scoring import grid_png
    from dlcli.rundir import load_keras_model

    try:
        decoder = vae_decoder(load_keras_model(ctx.run_dir / "model.keras"))
    except DlcliError as exc:
        ctx.notes.append(f"no VAE samples: {exc}")
        return ""
    z = np.random.default_rng(recipe.seed).standard_normal((64, int(decoder.inputs[0].shape[-1])))
    out = np.asarray(decoder.predict(z.astype(np.float32), verbose=0))
    png = grid_png(out, 8, (float(min(0.0, out.min())), float(max(1.0, out.max()))))
    return ("<p>New examples: the decoder of standard normal latent vectors (seeded by the recipe's seed).</p>"
            f'<div class="plots">{ctx.add_png("vae_samples.png", "64 samples of the VAE decoder", png)}</div>')


def section(ctx: _Ctx, recipe, metrics: dict) -> str:
    if recipe is not None and getattr(recipe.model, "architecture", None) == "vae":
        return _vae(ctx, recipe)
    if recipe is None or recipe.task != "gan":
        return ""
    score, rows = _epochs(ctx)
    if score is None or not rows:
        ctx.notes.append("history.csv holds no Frechet distance: no per-epoch samples to compare")
        return _grid(ctx, "final.png", "the kept generator")
    values = [r.get(score, math.nan) for r in rows]
    finite = [i for i, v in enumerate(values) if not math.isnan(v)]
    best = min(finite, key=lambda i: values[i]) if finite else len(rows) - 1
    picks: dict[str, int] = {}
    for what, i in (("first", 0), ("best", best), ("last", len(rows) - 1)):
        same = next((k for k, j in picks.items() if j == i), None)
        picks[f"{same} and {what}" if same else what] = i
        picks.pop(same, None)
    picks = {f"{k} epoch": i for k, i in picks.items()}
    extra = [c for c in ("class_accuracy",) if c in rows[0]]
    table = _table(["", "epoch", score, *extra],
                   [[what, i + 1, values[i], *[rows[i].get(c) for c in extra]] for what, i in picks.items()])
    figs = [_grid(ctx, f"epoch-{i + 1:03d}.png", f"{what} ({i + 1}): {score} {values[i]:.2f}")
            for what, i in picks.items()]
    kept = (metrics.get("test") or {}).get("frechet_distance")
    figs.append(_grid(ctx, "final.png", "the kept generator" + (f": test frechet_distance {kept:.2f}" if kept else "")))
    about = ("<p>Samples of fixed latents (the same in every grid). The score is the Frechet distance between "
             "generated and real examples in the features of the judge, a classifier trained on the same data "
             f"({_e(str(recipe.model.gan.judge or 'judge/'))}): lower is closer; comparable between runs that "
             "share data and judge, not with published FID figures.</p>")
    return about + table + f'<div class="plots">{"".join(f for f in figs if f)}</div>'

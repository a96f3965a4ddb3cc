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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlcli.errors import RunDirError, UsageError
from dlcli.report import anomaly, generative
from dlcli.report.context import _Ctx, _load_recipe, _read_json
from dlcli.report.html import _page
from dlcli.report.sections import _benchmark, _evaluation, _export, _history, _summary


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



def _run_sections(ctx: _Ctx, run_dir: Path):
    recipe = _load_recipe(ctx)
    env = _read_json(ctx, run_dir / "env.json", "env.json") or {}
    metrics = _read_json(ctx, run_dir / "metrics.json", "metrics.json (the run did not finish?)") or {}
    sections: list[tuple[str, str, str]] = [("summary", "Run", _summary(recipe, env, metrics))]
    for key, title, fn in (("history", "Training curves", lambda: _history(ctx)),
                           ("test", "Model on held-out data", lambda: _evaluation(ctx, recipe)),
                           ("samples", "Generated samples", lambda: generative.section(ctx, recipe, metrics)),
                           ("anomaly", "Anomaly detection", lambda: anomaly.section(ctx, recipe)),
                           ("export", "Exported artifacts", lambda: _export(ctx, metrics)),
                           ("benchmark", "Benchmark", lambda: _benchmark(ctx))):
        body = fn()
        if body:
            sections.append((key, title, body))
    return recipe, env, sections


# ---------------------------------------------------------------- entry point
def build_report(run_dir: str | Path, out: str | Path | None = None) -> Report:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``)."""
    from dlcli.atomic import write_bytes, write_text
    from dlcli.rundir import RUN_MARKERS

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found")
    from dlcli.report import tune

    study = tune.is_tune_dir(run_dir)
    if not study and not any((run_dir / m).exists() for m in RUN_MARKERS):  # reading only: a partial run will do
        raise RunDirError(f"{run_dir}: not a dlcli run (no recipe.yaml or env.json) nor a dlcli tune folder")
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
    if study:
        summary = _read_json(ctx, run_dir / "tune.json", "tune.json") or {}
        recipe, env, sections = None, {"status": "study"}, tune.sections(ctx, summary)
    else:
        recipe, env, sections = _run_sections(ctx, run_dir)
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
    from dlcli import tracking

    tracking.log_files(run_dir, [out, *([files_dir] if images else [])], "report")
    return Report(run_dir, out, images, [s[0] for s in sections], ctx.notes)

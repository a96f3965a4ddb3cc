"""What the report's sections share: the run being read, its notes and plots, and the
readers of its optional files (a missing or broken one becomes a note)."""

from __future__ import annotations

import base64
import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dlcli.errors import DlcliError
from dlcli.report.figures import _png
from dlcli.report.html import _e


@dataclass
class Plot:
    name: str  # file name, e.g. confusion_matrix.png
    title: str
    png: bytes



@dataclass
class _Ctx:
    run_dir: Path
    notes: list[str] = field(default_factory=list)
    plots: list[Plot] = field(default_factory=list)

    def add_plot(self, name: str, title: str, fig) -> str:
        return self.add_png(name, title, _png(fig))

    def add_png(self, name: str, title: str, png: bytes) -> str:
        plot = Plot(name, title, png)
        self.plots.append(plot)
        data = base64.b64encode(plot.png).decode("ascii")
        return f'<figure><img alt="{_e(title)}" src="data:image/png;base64,{data}"><figcaption>{_e(title)}</figcaption></figure>'


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

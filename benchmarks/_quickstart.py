"""Shared by the benchmark scripts: the digits quick-start run, trained when missing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_RUN = REPO / "runs" / "digits_cnn"


def quickstart_run(run_dir: str | Path = DEFAULT_RUN) -> Path:
    run = Path(run_dir)
    if not (run / "model.keras").exists():
        subprocess.run([sys.executable, "-m", "dlcli", "train", str(REPO / "recipes" / "digits_cnn.yaml"),
                        "--run-dir", str(run), "--overwrite", "--quiet"], check=True)
    return run

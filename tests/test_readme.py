"""The README's tour, run as written (after `make demo`) in a copy of the repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO


def tour_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## A tour"):]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines()
            if line.strip() and not line.startswith(". ")]


def test_the_tour_names_only_files_that_exist_or_that_it_makes():
    commands = tour_commands()
    assert commands[0].startswith("dlcli init") and all(c.startswith("dlcli ") for c in commands)
    for path in re.findall(r"\b(?:recipes|data)/[\w./-]+", " ".join(commands)):
        assert (REPO / path).exists(), path


@pytest.mark.slow
def test_the_tour_runs_verbatim_after_make_demo(tmp_path):
    work = tmp_path / "repo"
    shutil.copytree(REPO / "recipes", work / "recipes")
    shutil.copytree(REPO / "data", work / "data")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    demo = [sys.executable, "-m", "dlcli", "train", "recipes/digits_cnn.yaml", "--run-dir", "runs/digits_cnn",
            "--overwrite"]  # what `make demo` runs
    assert subprocess.run(demo, cwd=work, env=env, capture_output=True, stdin=subprocess.DEVNULL, check=False).returncode == 0
    for command in tour_commands():
        proc = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=900, check=False)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"
        assert "Traceback" not in proc.stderr, command
    for path in ("my_cnn.yaml", "result.json", "dist/digits-mcu.zip", "runs/digits_cnn/report.html",
                 "runs/digits_cnn-pruned/model.keras", "dlcli.schema.json", "runs/digits_cnn_tune/best.yaml",
                 "runs/digits_cnn_tune/report.html"):
        assert (work / path).exists(), path

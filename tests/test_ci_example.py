"""The example pipeline in docs/ci.md, run command by command on the digits quick start."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO


def workflow_commands() -> list[str]:
    text = (REPO / "docs" / "ci.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text, re.DOTALL).group(1)
    steps = yaml.safe_load(block)["jobs"]["model"]["steps"]
    commands = []
    for step in steps:
        for line in (step.get("run") or "").splitlines():
            if line.strip().startswith("dlcli "):
                commands.append(line.strip())
    return commands


def test_the_workflow_is_valid_and_complete():
    commands = workflow_commands()
    verbs = [c.split()[1] for c in commands]
    assert verbs == ["doctor", "validate", "validate", "train", "export", "benchmark", "package", "package", "report"]
    assert "--target tflite-int8" in commands[2]  # the pre-flight runs before training


@pytest.mark.slow
def test_the_example_pipeline_runs_command_by_command(tmp_path):
    work = tmp_path / "repo"
    shutil.copytree(REPO / "recipes", work / "recipes")
    shutil.copytree(REPO / "data", work / "data")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "CI": "true"}
    for command in workflow_commands():
        proc = subprocess.run(command, shell=True, cwd=work, env=env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=600, check=False)
        assert proc.returncode == 0, f"{command}\n{proc.stderr[-2000:]}"
    for path in ("preflight.json", "train.json", "export.json", "benchmark.json", "dist/digits-int8.zip", "dist/report.html",
                 "runs/ci/metrics.json", "runs/ci/export/manifest.json"):
        assert (work / path).exists(), path

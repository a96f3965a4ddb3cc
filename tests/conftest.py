"""Shared fixtures: tiny recipes on tiny data, a CLI runner, quiet TensorFlow."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def write_recipe(tmp_path):
    """write_recipe(yaml_text, name="recipe.yaml") -> Path (dedented, in tmp_path)."""

    def _write(text: str, name: str = "recipe.yaml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip())
        return path

    return _write


TINY_SYNTHETIC = """
version: 1
name: tiny
seed: 7
data:
  source: synthetic
  kind: classification
  samples: 160
  shape: [6]
  num_classes: 3
  noise: 0.3
  split: {validation: 0.2, test: 0.2}
model:
  architecture: mlp
  units: [16]
train:
  epochs: 3
  batch_size: 16
  optimizer: {name: adam, learning_rate: 0.01}
  callbacks: {tensorboard: false}
"""


@pytest.fixture
def tiny_recipe(write_recipe):
    """A recipe that trains a 1-hidden-layer MLP on 160 synthetic examples in ~2 s."""
    return write_recipe(TINY_SYNTHETIC)


@pytest.fixture
def cli():
    """Invoke the Typer app in-process: cli("train", path, "--json") -> Result."""
    from typer.testing import CliRunner

    from dlcli.cli.main import app

    runner = CliRunner()

    def _run(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return _run


def sigkill_after_mid_epoch_checkpoint(cmd: list[str], run_dir: Path, poll: float = 0.05):
    """Start ``cmd`` (a ``dlcli train``), SIGKILL it once it has written a checkpoint inside
    its second epoch or later, and return that checkpoint (asserted mid-epoch)."""
    import signal
    import subprocess
    import time

    from dlcli.train import resume as ckpt

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        found = ckpt.latest(run_dir / "checkpoints")
        if found is not None and found.epoch >= 1 and found.step > 0:
            break
        time.sleep(poll)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    killed_at = ckpt.latest(run_dir / "checkpoints")
    assert killed_at is not None and killed_at.step > 0, "killed before a mid-epoch checkpoint"
    return killed_at


def one_line_error(result, code: int) -> str:
    """The one `error: ...` line of a failed command (progress lines may precede it)."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.split(":")[0]]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr  # progress lines may precede it
    assert "Traceback" not in result.stderr
    assert errors[0].startswith("error: ")
    return errors[0]

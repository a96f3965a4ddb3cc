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

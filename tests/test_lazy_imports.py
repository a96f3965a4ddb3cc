"""`dlcli --help`, `validate`, `schema` and `init` never import TensorFlow or Keras."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO

PROBE = """
import atexit, sys
def report():
    heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'onnx', 'onnxruntime', 'tf2onnx', 'ai_edge_litert', 'tflite_micro', 'matplotlib', 'optuna', 'mlflow', 'sqlalchemy'))
    sys.stderr.write('HEAVY=' + ','.join(heavy[:5]) + '\\n')
atexit.register(report)
sys.argv = ['dlcli'] + sys.argv[1:]
from dlcli.cli.main import run
run()
"""


@pytest.mark.parametrize("args", [
    ["--help"], ["--version"], ["validate", "recipes/digits_cnn.yaml"], ["schema"], ["init", "--list"],
    ["train", "--help"], ["export", "--help"], ["prune", "--help"], ["benchmark", "--help"], ["distill", "--help"], ["evaluate", "--help"], ["predict", "--help"], ["package", "--help"],
    ["report", "--help"], ["doctor", "--help"], ["tune", "--help"], ["track", "--help"],
    ["validate", "recipes/digits_cnn_tune.yaml"],
    ["validate", "recipes/does-not-exist.yaml"], ["schema", "--markdown"], ["init", "mlp", "/tmp/dlcli-lazy-test.yaml", "--force"],
])
def test_light_commands_do_not_import_tensorflow(args):
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode in (0, 2), proc.stderr
    heavy = [line for line in proc.stderr.splitlines() if line.startswith("HEAVY=")]
    assert heavy == ["HEAVY="], f"{args}: imported {heavy}"


def test_python_dash_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "dlcli", "--version"], cwd=REPO, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("dlcli ")

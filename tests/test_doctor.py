"""`dlcli doctor`: the real environment through a local Typer app (the lead registers the
command in main.py), every rule of ``diagnose`` on distribution sets, and a cheap --help."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib import metadata

import pytest
from conftest import REPO

LABELS = ("tensorflow", "keras", "numpy", "protobuf", "onnx", "tf2onnx", "onnxruntime", "ai-edge-litert",
          "tflite-micro", "pydantic", "typer", "matplotlib")
# the verified stack, as distribution -> version
VERIFIED = {"tensorflow-cpu": "2.21.0", "keras": "3.15.1", "numpy": "2.4.6", "protobuf": "7.36.2", "onnx": "1.23.2",
            "tf2onnx": "1.17.0", "onnxruntime": "1.32.0", "ai-edge-litert": "2.3.0", "tflite-micro": "0.dev20261023",
            "pydantic": "2.14.3", "typer": "0.29.2", "matplotlib": "3.11.2"}


@pytest.fixture
def doctor_cli(monkeypatch):
    import typer
    from typer.testing import CliRunner

    from dlcli.cli.cmd_doctor import doctor

    for var in ("TF_USE_LEGACY_KERAS", "KERAS_BACKEND"):
        monkeypatch.delenv(var, raising=False)
    app = typer.Typer()
    app.command("doctor")(doctor)
    app.callback()(lambda: None)
    return lambda *args: CliRunner().invoke(app, ["doctor", *args], catch_exceptions=False)


def codes(problems, level=None):
    return {p["code"] if isinstance(p, dict) else p.code for p in problems
            if level is None or (p["level"] if isinstance(p, dict) else p.level) == level}


def test_json_lists_versions_and_devices(doctor_cli):
    import keras
    import numpy
    import tensorflow as tf

    r = doctor_cli("--json")
    assert r.exit_code == 0, r.stderr
    obj = json.loads(r.stdout)
    assert obj["ok"] is True and obj["counts"]["error"] == 0
    assert obj["python"] == ".".join(map(str, sys.version_info[:3]))
    assert set(obj["versions"]) == set(LABELS)
    assert obj["versions"]["tensorflow"] == tf.__version__ and obj["versions"]["keras"] == keras.__version__
    assert obj["versions"]["numpy"] == numpy.__version__
    for label in ("protobuf", "onnx", "tf2onnx", "onnxruntime", "ai-edge-litert", "pydantic", "typer", "matplotlib"):
        assert obj["versions"][label] == metadata.version(label), label
    assert {d["name"] for d in obj["devices"]} == {d.name for d in tf.config.list_physical_devices()}
    assert "CPU" in {d["type"] for d in obj["devices"]}
    assert "tf-lite-interpreter" in codes(obj["problems"])  # always noted
    assert not codes(obj["problems"], "warning"), obj["problems"]  # this environment is the verified stack


def test_table_output(doctor_cli):
    from dlcli.doctor import PACKAGES, installed_as, installed_distributions

    tf_dist = installed_as(installed_distributions(), PACKAGES["tensorflow"])[0]
    r = doctor_cli()
    assert r.exit_code == 0, r.stderr
    for text in ("tensorflow", tf_dist, "keras", "ai-edge-litert", "devices: CPU", "tf.lite.Interpreter"):
        assert text in r.stdout, text


def test_legacy_keras_is_flagged(doctor_cli, monkeypatch):
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", "1")
    r = doctor_cli("--json")
    obj = json.loads(r.stdout)
    legacy = [p for p in obj["problems"] if p["code"] == "legacy-keras"]
    assert len(legacy) == 1 and legacy[0]["fix"] == "unset TF_USE_LEGACY_KERAS"
    assert obj["environment"]["TF_USE_LEGACY_KERAS"] == "1"
    # an error (exit 2) where tf_keras makes tf.keras Keras 2; a warning where tf.keras just fails to import
    tf_keras = "tf-keras" in obj["distributions"]
    assert legacy[0]["level"] == ("error" if tf_keras else "warning")
    assert r.exit_code == (2 if tf_keras else 0)


def test_known_bad_condition_exits_2_with_one_line(doctor_cli, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "no_such_backend")
    r = doctor_cli("--json")
    assert r.exit_code == 2
    obj = json.loads(r.stdout)  # the full diagnosis is still printed
    assert obj["ok"] is False and "keras-backend" in codes(obj["problems"], "error")
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: KERAS_BACKEND=no_such_backend") and "fix: unset" in lines[0]
    r = doctor_cli()
    assert r.exit_code == 2 and "KERAS_BACKEND=no_such_backend" in r.stdout


@pytest.mark.parametrize("change, environ, level, code", [
    ({"tensorflow": "2.21.0"}, {}, "error", "conflict-tensorflow"),  # tensorflow and tensorflow-cpu
    ({"keras-nightly": "3.16.0.dev1"}, {}, "error", "conflict-keras"),
    ({"onnxruntime-gpu": "1.32.0"}, {}, "warning", "conflict-onnxruntime"),
    ({"keras": "2.15.0"}, {}, "error", "keras-2"),
    ({"keras": "3.16.0"}, {}, "warning", "keras-unverified"),
    ({"tensorflow-cpu": "2.15.1"}, {}, "error", "tensorflow-too-old"),
    ({"tensorflow-cpu": "2.22.0rc1"}, {}, "warning", "tensorflow-unverified"),
    ({"tf-keras": "2.21.0"}, {"TF_USE_LEGACY_KERAS": "1"}, "error", "legacy-keras"),
    ({}, {"TF_USE_LEGACY_KERAS": "true"}, "warning", "legacy-keras"),
    ({"tf-keras": "2.21.0"}, {}, "info", "tf-keras"),
    ({"tensorflow-model-optimization": "0.8.0"}, {}, "warning", "tfmot"),
    ({"tf2onnx": "1.15.1"}, {}, "error", "tf2onnx-numpy2"),
    ({}, {"KERAS_BACKEND": "jax"}, "error", "keras-backend"),  # jax not installed
    ({"jax": "0.7.0"}, {"KERAS_BACKEND": "jax"}, "warning", "keras-backend"),
    ({"onnxruntime": None}, {}, "warning", "missing-onnxruntime"),
    ({"ai-edge-litert": None}, {}, "warning", "missing-ai-edge-litert"),
    ({"tflite-micro": None}, {}, "info", "missing-tflite-micro"),
    ({"keras": None}, {}, "error", "missing-keras"),
])
def test_diagnose_rules(change, environ, level, code):
    from dlcli.doctor import diagnose

    dists = {k: v for k, v in {**VERIFIED, **change}.items() if v is not None}
    problems = diagnose(dists, environ)
    assert code in codes(problems, level), [(p.level, p.code) for p in problems]
    assert codes(diagnose(VERIFIED, {}), "error") == set() and codes(diagnose(VERIFIED, {}), "warning") == set()


def test_tf2onnx_old_is_fine_with_numpy_1():
    from dlcli.doctor import diagnose

    problems = diagnose({**VERIFIED, "tf2onnx": "1.15.1", "numpy": "1.26.4"}, {})
    assert "tf2onnx-numpy2" not in codes(problems)


def test_doctor_help_does_not_import_tensorflow():
    probe = textwrap.dedent("""
        import sys, typer
        from dlcli.cli.cmd_doctor import doctor
        app = typer.Typer()
        app.command("doctor")(doctor)
        app.callback()(lambda: None)
        try:
            app(["doctor", "--help"])
        except SystemExit:
            pass
        print("HEAVY=" + ",".join(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))[:5]))
    """)
    proc = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert "--json" in proc.stdout and proc.stdout.strip().splitlines()[-1] == "HEAVY=", proc.stdout

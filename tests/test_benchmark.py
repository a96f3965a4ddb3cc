"""`dlcli benchmark`: every figure present and positive, thresholds give exit code 7."""

from __future__ import annotations

import json

import pytest

from dlcli.export import export_run
from dlcli.recipe.loader import load_recipe
from dlcli.train import train

RECIPE = """
name: bench
seed: 1
data: {source: synthetic, samples: 300, shape: [12], num_classes: 3, noise: 0.3, split: {test: 0.25}}
model: {architecture: mlp, units: [16]}
train: {epochs: 4, batch_size: 32, optimizer: {name: adam, learning_rate: 0.01}, callbacks: {tensorboard: false}}
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    (root / "r.yaml").write_text(RECIPE)
    train(load_recipe(root / "r.yaml"), root / "run", progress="none")
    assert not export_run(root / "run", ["saved_model", "tflite", "onnx"], "int8").failed
    return root / "run"


def test_benchmark_run_dir_measures_keras_and_every_artifact(exported, cli):
    r = cli("benchmark", exported, "--runs", "20", "--batch-size", "16", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["format"] == "dlcli-benchmark/1" and out["passed"] and out["batch_size"] == 16
    names = [m["name"] for m in out["results"]]
    assert names == ["keras", "saved_model", "model_float32.tflite", "model_int8.tflite", "model.onnx"]
    runtimes = {m["name"]: m["runtime"] for m in out["results"]}
    assert runtimes["model_int8.tflite"] == "ai_edge_litert" and runtimes["model.onnx"] == "onnxruntime"
    for m in out["results"]:
        assert m["size_bytes"] > 0 and m["load_seconds"] > 0
        assert 0 < m["latency_ms"]["p50"] <= m["latency_ms"]["p95"]
        assert m["throughput_samples_per_s"] > 0 and m["peak_memory_bytes"] >= 0
        assert m["metric"]["name"] == "accuracy" and 0.5 < m["metric"]["value"] <= 1.0
    assert json.loads((exported / "benchmark.json").read_text())["results"] == out["results"]


def test_benchmark_artifacts_and_thresholds(exported, cli):
    int8 = exported / "export" / "model_int8.tflite"
    r = cli("benchmark", int8, exported / "export" / "model.onnx", "--runs", "10", "--fail-under", "accuracy=0.5")
    assert r.exit_code == 0, r.stderr
    assert "model_int8.tflite" in r.stdout and "model.onnx" in r.stdout
    r = cli("benchmark", int8, "--runs", "10", "--fail-under", "accuracy=1.01")
    assert r.exit_code == 7 and "accuracy" in r.stderr and "< 1.01" in r.stderr
    r = cli("benchmark", int8, "--runs", "10", "--max-latency-ms", "0.000001", "--json")
    assert r.exit_code == 7
    out = json.loads(r.stdout)
    assert out["passed"] is False and "p50 latency" in out["failures"][0]
    r = cli("benchmark", int8, "--runs", "5", "--fail-under", "accuracy")
    assert r.exit_code == 2 and "METRIC=VALUE" in r.stderr

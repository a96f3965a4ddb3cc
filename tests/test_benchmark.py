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


def _litert_benchmark(model, runs: int = 20) -> dict:
    """LiteRT's own tool, shipped in the ai-edge-litert wheel, as a user would run it."""
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(sys.executable).parent / "litert-benchmark"
    out = model.parent / f"{model.name}.litert.json"
    subprocess.run([str(tool), f"--model={model}", "--num_threads=1", f"--num_runs={runs}", "--warmup_runs=5",
                    f"--result_json={out}"], check=True, capture_output=True, timeout=120)
    return json.loads(out.read_text())


def test_native_latency_and_delegation_agree_with_litert_benchmark(exported, cli):
    r = cli("benchmark", exported, "--runs", "30", "--warmup", "5", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["threads"] == 1 and out["warmup"] == 5
    by_name = {m["name"]: m for m in out["results"]}
    assert by_name["keras"]["native"] is None and by_name["saved_model"]["native"] is None
    manifest = {a["name"]: a for a in json.loads((exported / "export" / "manifest.json").read_text())["artifacts"]}
    for name in ("model_float32.tflite", "model_int8.tflite"):
        native = by_name[name]["native"]
        assert native["tool"] == "litert CompiledModel" and native["runs"] == 30 and native["threads"] == 1
        assert 0 < native["latency_ms"]["p50"] <= native["latency_ms"]["p95"]
        assert by_name[name]["python_overhead_ms"] == pytest.approx(
            by_name[name]["latency_ms"]["p50"] - native["latency_ms"]["p50"], abs=1e-3)
        tool = _litert_benchmark(exported / "export" / name)
        assert native["fully_accelerated"] is tool["fully_accelerated"], name
        assert manifest[name]["delegation"]["fully_accelerated"] is tool["fully_accelerated"], name
        assert (native["fallback_ops"] == []) is native["fully_accelerated"], native
    assert by_name["model_float32.tflite"]["native"]["fully_accelerated"] is True
    onnx = by_name["model.onnx"]["native"]
    assert onnx["tool"] == "onnxruntime io_binding" and 0 < onnx["latency_ms"]["p50"] <= onnx["latency_ms"]["p95"]
    assert onnx["fully_accelerated"] is None and onnx["accelerator"] == "CPUExecutionProvider"
    table = cli("benchmark", exported, "--runs", "5").stdout
    assert "native" in table and "py ovh" in table and "XNNPACK" in table
    if not by_name["model_int8.tflite"]["native"]["fully_accelerated"]:
        assert "model_int8.tflite: partial: " in table and "(not fully accelerated)" in table
    r = cli("benchmark", exported, "--runs", "5", "--no-native", "--json")
    assert all(m["native"] is None for m in json.loads(r.stdout)["results"])


def test_xnnpack_fallback_ops_are_read_from_the_delegate_partition(tmp_path):
    """An int8 softmax stays on the plain kernels while XNNPACK runs the rest (what LiteRT's
    is_fully_accelerated() reports as False); a float graph is delegated whole."""
    import keras
    import numpy as np
    import tensorflow as tf

    from dlcli.latency import delegation, xnnpack_fallback_ops

    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    (tmp_path / "f.tflite").write_bytes(conv.convert())
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([np.random.default_rng(i).normal(size=(1, 6)).astype("float32")]
                                           for i in range(20))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    (tmp_path / "q.tflite").write_bytes(conv.convert())
    assert xnnpack_fallback_ops(tmp_path / "f.tflite") == []
    assert delegation(tmp_path / "f.tflite")["fully_accelerated"] is True
    q = delegation(tmp_path / "q.tflite")
    assert q["fully_accelerated"] is _litert_benchmark(tmp_path / "q.tflite")["fully_accelerated"]
    assert q["fallback_ops"] == ([] if q["fully_accelerated"] else xnnpack_fallback_ops(tmp_path / "q.tflite"))
    if not q["fully_accelerated"]:
        assert q["fallback_ops"] and set(q["fallback_ops"]) <= {"SOFTMAX", "FULLY_CONNECTED", "QUANTIZE", "DEQUANTIZE"}


def test_a_file_litert_cannot_load_is_a_target_error(tmp_path):
    from dlcli.errors import ExitCode
    from dlcli.latency import TargetError, delegation, tflite

    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"TFL3" + bytes(range(256)) * 4)
    with pytest.raises(TargetError) as info:
        tflite(bad, warmup=1, runs=1)
    assert info.value.exit_code == ExitCode.TARGET == 10 and str(bad) in str(info.value)
    assert "\n" not in str(info.value)
    d = delegation(bad)  # recorded in a manifest, never raised
    assert d["fully_accelerated"] is None and "LiteRT could not compile it" in d["error"] and "\n" not in d["error"]

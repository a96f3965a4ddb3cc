"""`dlcli validate RECIPE --target`: a pre-flight that builds the untrained model, converts it
in a child process and names every op the target cannot run, with the recipe key."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import one_line_error

DATA = "data: {source: synthetic, samples: 120, shape: [12], num_classes: 3, noise: 0.3}"


def _recipe(write_recipe, model: str, name: str = "r.yaml", extra: str = "") -> object:
    return write_recipe(f"name: pf\nseed: 1\n{DATA}\nmodel: {model}\n{extra}", name)


def _layers(*activations: str) -> str:
    dense = ", ".join(f"{{type: Dense, units: 8, activation: {a}}}" for a in activations)
    return f"{{layers: [{dense}, {{type: Dense, units: 3, activation: softmax}}]}}"


@pytest.mark.slow  # converts in child processes: ~25 s
def test_a_float_op_in_int8_is_named_with_its_recipe_key(cli, write_recipe):
    path = _recipe(write_recipe, _layers("relu", "elu"))  # ELU has no int8 kernel: it runs in float
    r = cli("validate", path, "--target", "tflite-int8", "--json")
    assert r.exit_code == 10, r.stderr
    out = json.loads(r.stdout)
    assert out["passed"] is False and out["target"] == "tflite-int8"
    assert [f["op"] for f in out["findings"]] == ["ELU"]  # its QUANTIZE / DEQUANTIZE boundary is not listed
    elu = out["findings"][0]
    assert elu["keys"] == ["model.layers.1.activation"] and elu["layers"] and "relu" in elu["advice"]
    assert elu["reasons"] == ["float32 tensors"]
    line = one_line_error(cli("validate", path, "--target", "tflite-int8"), 10)  # the table, then the line
    assert "ELU" in line and "model.layers.1.activation" in line
    assert cli("validate", path, "--target", "tflite-int8", "--set", "model.layers.1.activation=relu").exit_code == 0


@pytest.mark.slow  # child-process conversions: 10-30 s
def test_an_op_tflite_micro_lacks_is_named_only_for_mcu(cli, write_recipe):
    path = _recipe(write_recipe, _layers("gelu", "selu"))  # int8 kernels in LiteRT, none in TFLite Micro
    assert cli("validate", path, "--target", "tflite-int8").exit_code == 0
    r = cli("validate", path, "--target", "mcu", "--json")
    assert r.exit_code == 10, r.stderr
    found = {f["op"]: f for f in json.loads(r.stdout)["findings"]}
    assert set(found) == {"GELU", "SELECT"}
    assert found["GELU"]["keys"] == ["model.layers.0.activation"]  # found by its activation name
    assert found["SELECT"]["keys"] == ["model.layers.1"]  # found by its layer
    assert all(f["reasons"] == ["not in TFLite Micro's op resolver"] for f in found.values())


@pytest.mark.slow  # child-process conversions: 10-30 s
def test_a_model_that_fits_passes_and_the_mcu_arena_is_measured(cli, write_recipe):
    path = _recipe(write_recipe, "{architecture: mlp, units: [16]}")
    r = cli("validate", path, "--target", "mcu", "--json")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["passed"] and out["findings"] == [] and out["model_bytes"] > 0
    assert out["arena"]["method"] == "measured" and out["arena"]["recommended_bytes"] >= out["arena"]["measured_bytes"]
    assert "FULLY_CONNECTED" in out["ops"]


@pytest.mark.slow  # child-process conversions: 10-30 s
def test_flash_and_ram_limits_from_the_command_line_or_the_recipe(cli, write_recipe):
    path = _recipe(write_recipe, "{architecture: mlp, units: [64, 64]}",
                   extra="export: {target: {flash_kb: 1}}\n")
    r = cli("validate", path, "--target", "mcu", "--json")
    assert r.exit_code == 10
    out = json.loads(r.stdout)
    assert out["limits"]["flash_kb"] == 1 and any(f.startswith("flash:") for f in out["failures"])
    r = cli("validate", path, "--target", "mcu", "--flash-kb", "1000", "--ram-kb", "1")
    line = one_line_error(r, 10)
    assert "ram: the tensor arena needs" in line and "1 KiB limit" in line and "flash:" not in line


@pytest.mark.slow
def test_a_transformer_shows_its_float_islands(cli):
    from conftest import REPO

    r = cli("validate", REPO / "recipes" / "digits_transformer.yaml", "--target", "tflite-int8", "--json")
    assert r.exit_code == 10, r.stderr
    ops = {f["op"] for f in json.loads(r.stdout)["findings"]}
    assert ops, r.stdout


def test_bad_targets_and_recipes_are_one_line(cli, write_recipe):
    path = _recipe(write_recipe, "{architecture: mlp, units: [4]}")
    line = one_line_error(cli("validate", path, "--target", "fpga"), 2)
    assert "'--target'" in line and "'fpga'" in line and "tflite-int8" in line
    bad = _recipe(write_recipe, "{layers: [{type: Dense, units: 4}, {type: Reshape, target_shape: [7]}]}", "b.yaml")
    line = one_line_error(cli("validate", bad, "--target", "tflite-int8"), 2)
    assert "model.layers.1" in line


@pytest.mark.slow  # child-process conversions: 10-30 s
def test_onnx_int8_names_the_nodes_onnxruntime_leaves_in_float(cli, write_recipe):
    path = _recipe(write_recipe, _layers("relu", "gelu"))  # GELU's erf arithmetic stays float in the QDQ graph
    r = cli("validate", path, "--target", "onnx-int8", "--json")
    assert r.exit_code == 10, r.stderr
    out = json.loads(r.stdout)
    assert out["target"] == "onnx-int8" and "QuantizeLinear" in out["ops"] and out["model_bytes"] > 0
    assert out["findings"] and all(f["reasons"] == ["runs in float"] for f in out["findings"])
    assert {k for f in out["findings"] for k in f["keys"]} == {"model.layers.1"}  # the GELU layer, not the ReLU one
    assert cli("validate", path, "--target", "onnx-int8", "--set", "model.layers.1.activation=relu").exit_code == 0


@pytest.mark.slow  # child-process conversions: ~20 s
def test_gpu_names_a_recurrent_loop_and_passes_a_plain_mlp(cli, write_recipe):
    seq = "data: {source: synthetic, samples: 120, shape: [6, 2], num_classes: 3, noise: 0.3}"
    rnn = write_recipe(f"name: pf\nseed: 1\n{seq}\nmodel: {{layers: [{{type: GRU, units: 4}}, "
                       "{type: Dense, units: 3, activation: softmax}]}\n", "rnn.yaml")
    r = cli("validate", rnn, "--target", "gpu", "--json")
    assert r.exit_code == 10, r.stderr
    out = json.loads(r.stdout)
    assert [(f["op"], f["keys"], f["reasons"]) for f in out["findings"]] == [("WHILE", ["model.layers.0"],
                                                                              ["no GPU kernel"])]
    assert "FULLY_CONNECTED" in out["ops"] and out["accelerator"]["accelerator"] == "LiteRT GPU"
    assert "WHILE" in one_line_error(cli("validate", rnn, "--target", "gpu"), 10)
    mlp = _recipe(write_recipe, "{architecture: mlp, units: [16]}", "mlp.yaml")
    r = cli("validate", mlp, "--target", "gpu", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["findings"] == []


def test_the_gpu_op_list_names_real_tflite_builtins():
    from ai_edge_litert import schema_py_generated as schema

    from dlcli.gpu_ops import GPU_OPS, RECURRENT

    builtins = {k for k in vars(schema.BuiltinOperator) if not k.startswith("_")}
    assert GPU_OPS <= builtins and set(RECURRENT) <= builtins  # a typo would pass every model
    assert "WHILE" not in GPU_OPS and "LSTM" not in GPU_OPS and {"CONV_2D", "FULLY_CONNECTED"} <= GPU_OPS


def test_a_converter_crash_is_one_error_and_an_early_exit_leaves_no_child(tmp_path):
    import os
    import signal

    import keras

    from dlcli.errors import TargetError
    from dlcli.preflight import _Child

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with _Child("tflite-int8") as convert:  # the child dies as a converter segfault would
        child = convert.__self__
        os.kill(child.proc.pid, signal.SIGSEGV)
        child.proc.wait()
        with pytest.raises(TargetError, match=r"the TFLite converter crashed \(signal 11\) on this model"):
            convert(model, np.zeros((4, 3), np.float32))
    assert not child.folder.exists()
    with pytest.raises(RuntimeError), _Child("tflite-int8") as convert:  # the model did not build: no orphan
        child = convert.__self__
        raise RuntimeError("the recipe's model did not build")
    assert child.proc.returncode is not None and not child.folder.exists()

"""Quantization-aware training on Keras 3: folding, the one trainer, int8 exports whose
ranges are the ones learned, pruned zeros kept, the pipeline stage, bad input."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from conftest import one_line_error

from dlcli.compress.qat import _folded, qat, qat_model
from dlcli.export import export_run
from dlcli.recipe.loader import load_recipe
from dlcli.recipe.schema import QatSpec
from dlcli.train import train

TRAIN = "train: {epochs: 3, batch_size: 32, optimizer: {name: adam, learning_rate: 0.01}, callbacks: {tensorboard: false}}"
CNN = f"""
name: qat_cnn
seed: 4
data: {{source: synthetic, kind: image, samples: 400, shape: [8, 8, 1], num_classes: 3, noise: 0.3, split: {{test: 0.25}}}}
model: {{architecture: cnn, filters: [8, 16], dense: [16], normalization: batch}}
{TRAIN}
"""
# a depthwise convolution and a 1-D convolution, each followed by batch norm and a ReLU layer
LAYERS = f"""
name: qat_layers
seed: 5
data: {{source: synthetic, kind: image, samples: 300, shape: [8, 8, 2], num_classes: 3, noise: 0.3, split: {{test: 0.25}}}}
model:
  layers:
    - {{type: DepthwiseConv2D, kernel_size: 3, depth_multiplier: 2, use_bias: false}}
    - {{type: BatchNormalization}}
    - {{type: ReLU}}
    - {{type: Reshape, target_shape: [36, 4]}}
    - {{type: Conv1D, filters: 6, kernel_size: 3}}
    - {{type: BatchNormalization}}
    - {{type: Activation, activation: relu}}
    - {{type: GlobalAveragePooling1D}}
    - {{type: Dense, units: 3, activation: softmax}}
{TRAIN}
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("qat")
    out = {}
    for name, text in (("cnn", CNN), ("layers", LAYERS)):
        (root / f"{name}.yaml").write_text(text)
        train(load_recipe(root / f"{name}.yaml"), root / name, progress="none")
        out[name] = root / name
    return out


@pytest.mark.parametrize("kind", ["Conv2D", "DepthwiseConv2D", "Dense"])
def test_batch_norm_folds_into_the_kernel_exactly(kind):
    rng = np.random.default_rng(0)
    make = {"Conv2D": lambda: keras.layers.Conv2D(4, 3), "Dense": lambda: keras.layers.Dense(4),
            "DepthwiseConv2D": lambda: keras.layers.DepthwiseConv2D(3, depth_multiplier=2)}[kind]
    layer, bn = make(), keras.layers.BatchNormalization(epsilon=1e-3)
    x = rng.normal(size=(2, 6, 6, 2)).astype("float32") if kind != "Dense" else rng.normal(size=(2, 5)).astype("float32")
    y = bn(layer(x), training=False)
    channels = int(y.shape[-1])
    for var, value in ((bn.gamma, rng.uniform(0.5, 2, channels)), (bn.beta, rng.normal(size=channels)),
                       (bn.moving_mean, rng.normal(size=channels)), (bn.moving_variance, rng.uniform(0.1, 3, channels))):
        var.assign(value.astype("float32"))
    kernel, bias = _folded(layer, bn)
    twin = make()
    twin(x)
    twin.kernel.assign(kernel)
    twin.bias.assign(bias)
    np.testing.assert_allclose(twin(x), bn(layer(x), training=False), atol=1e-5)


def test_clone_plan_folds_fuses_and_keeps_the_float_outputs_close(runs):
    from dlcli.rundir import open_run

    model = open_run(runs["cnn"]).load_model()
    clone, plan = qat_model(model, QatSpec())
    info = plan.to_json()
    assert set(info["folded_batch_norm"]) == set(info["quantized"]) - {"dense_0", "head"}
    assert info["fused_activation"]["conv_0_0"] == "relu" and info["input_ranges"] == ["conv_0_0"]
    x = np.random.default_rng(1).uniform(0, 1, (16, 8, 8, 1)).astype("float32")
    clone(x, training=True)  # the first batch sets every tracked range
    diff = np.abs(clone.predict(x, verbose=0) - model.predict(x, verbose=0)).max()
    assert 0 < diff < 0.1  # fake-quantized (not identical), still the same model


def test_qat_run_exports_int8_with_the_learned_ranges(runs, tmp_path, cli):
    out = tmp_path / "cnn-qat"
    r = cli("qat", runs["cnn"], "--run-dir", out, "--epochs", "2", "--json")
    assert r.exit_code == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["metrics"]["test"]["accuracy"] >= res["float_metrics"]["test"]["accuracy"] - 0.05
    env = json.loads((out / "env.json").read_text())
    assert env["stage"] == "qat" and env["status"] == "completed"
    ranges = json.loads((out / "qat.json").read_text())["ranges"]
    exp = export_run(out, ["tflite", "onnx"], "int8")
    assert not exp.failed, [a.failure() for a in exp.artifacts if a.status != "passed"]
    int8 = next(a for a in exp.artifacts if a.name == "model_int8.tflite")
    assert int8.float_ops == []
    onnx = next(a for a in exp.artifacts if a.name == "model.onnx")
    assert any("QuantizeLinear" in w for w in onnx.warnings)
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(out / "export" / "model_int8.tflite"))
    spans = []
    for d in it.get_tensor_details():
        scale, zero = d["quantization"]
        if scale and d["dtype"] == np.int8:
            spans.append(((-128 - zero) * scale, (127 - zero) * scale))
    for name in ("conv_0_0", "conv_1_0", "dense_0"):  # each learned range is a tensor's int8 range
        lo, hi = ranges[name]
        assert any(abs(a - min(lo, 0)) < 1e-3 * (hi - lo) + 1e-6 and abs(b - hi) < 2e-2 * (hi - lo)
                   for a, b in spans), (name, lo, hi)
    r = cli("package", out, "--target", "mcu", "--out", tmp_path / "qat-mcu.zip")  # runs it in TFLite Micro
    assert r.exit_code == 0, r.stderr


def test_a_model_keras_cannot_clone_is_refused():
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Subclassed()
    model(np.zeros((1, 3), "float32"))
    from dlcli.errors import ModelError, UsageError

    with pytest.raises((ModelError, UsageError), match="cannot wrap|nothing to quantize"):
        qat_model(model, QatSpec())


@pytest.mark.slow
def test_depthwise_and_conv1d_fold_and_convert_to_full_int8(runs, tmp_path):
    res = qat(runs["layers"], tmp_path / "layers-qat", epochs=1, progress="none")
    assert set(res.plan["quantized"]) == {"depthwise_conv2d", "conv1d", "dense"}
    assert set(res.plan["folded_batch_norm"]) == {"depthwise_conv2d", "conv1d"}
    assert res.plan["output_ranges"] == ["global_average_pooling1d"]
    exp = export_run(tmp_path / "layers-qat", ["tflite"], "int8")
    art = next(a for a in exp.artifacts if a.quantization == "int8")
    assert art.status == "passed" and art.float_ops == [], art.failure()
    # per tensor, and the softmax fused into the Dense: TFLite's fixed softmax scale, no requantize pair
    qat(runs["layers"], tmp_path / "per-tensor", epochs=1, per_channel=False, progress="none")
    exp = export_run(tmp_path / "per-tensor", ["tflite"], "int8", int8_per_channel=False)
    art = next(a for a in exp.artifacts if a.quantization == "int8")
    assert art.status == "passed" and art.float_ops == [], art.failure()


@pytest.mark.slow
def test_qat_after_pruning_keeps_the_zeros(runs, tmp_path):
    from dlcli.compress.prune import prune

    pruned = prune(runs["cnn"], tmp_path / "pruned", sparsity=0.5, epochs=1, min_size=0, progress="none")
    res = qat(pruned.run_dir, tmp_path / "pruned-qat", epochs=1, progress="none")
    assert res.plan["kept_sparsity"] == pytest.approx(pruned.sparsity["prunable_sparsity"], abs=1e-6)


@pytest.mark.slow
def test_pipeline_runs_qat_and_exports_int8(tmp_path):
    text = CNN.replace("name: qat_cnn", "name: qat_pipe") + "compress: {qat: {epochs: 1}}\nexport: {formats: [tflite]}\n"
    (tmp_path / "r.yaml").write_text(text)
    res = train(load_recipe(tmp_path / "r.yaml"), tmp_path / "run", progress="none")
    summary = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert [s["name"] for s in summary["stages"]] == ["train", "qat"]
    names = {a["name"]: a["status"] for a in summary["export"]["artifacts"]}
    assert names.get("model_int8.tflite") == "passed", summary
    assert res.run_dir == tmp_path / "run"


def test_bad_input_is_reported(runs, tmp_path, cli):
    r = cli("qat", runs["cnn"], "--exclude", "nope", "--run-dir", tmp_path / "a")
    assert "nope" in one_line_error(r, 2)
    everything = ["--exclude=" + n for n in ("conv_0_0", "conv_1_0", "dense_0", "head")]
    r = cli("qat", runs["cnn"], *everything, "--run-dir", tmp_path / "b")
    assert "nothing to quantize" in one_line_error(r, 2)
    r = cli("qat", runs["cnn"], "--learning-rate", "-1", "--run-dir", tmp_path / "c")
    assert "--learning-rate" in one_line_error(r, 2)
    r = cli("qat", runs["cnn"], "--run-dir", runs["cnn"])
    assert "own directory" in one_line_error(r, 5)
    assert not any((tmp_path / d).exists() for d in "abc")

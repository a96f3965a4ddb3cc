"""What the parity gate and the manifest say about quantized TFLite files beyond the error:
clipped int8 outputs, ops left in float, and quantization that quantized nothing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from conftest import one_line_error

from dlcli.export import export_run
from dlcli.recipe.loader import load_recipe
from dlcli.train import train

TRAIN = "train: {epochs: 3, batch_size: 16, optimizer: {name: adam, learning_rate: 0.01}, callbacks: {tensorboard: false}}"
REGRESSION = ("name: reg\nseed: 3\ntask: regression\n"
              "data: {source: synthetic, kind: regression, samples: 200, shape: [5], split: {test: 0.25}}\n"
              f"model: {{architecture: mlp, units: [16]}}\n{TRAIN}\n")
# no held-out split: the gate runs on the training rows that calibrate, so nothing can clip
REGRESSION_ALL = REGRESSION.replace("name: reg", "name: reg_all").replace("split: {test: 0.25}",
                                                                          "split: {validation: 0.0, test: 0.0}")
CLASSES = ("name: cls\nseed: 3\n"
           "data: {source: synthetic, samples: 160, shape: [6], num_classes: 3, noise: 0.3, split: {test: 0.25}}\n"
           "model: {layers: [{type: Dense, units: 8, activation: elu}, {type: Dense, units: 3, activation: softmax}]}\n"
           f"{TRAIN}\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant")
    out = {}
    for name, text in (("reg", REGRESSION), ("reg_all", REGRESSION_ALL), ("cls", CLASSES)):
        (root / f"{name}.yaml").write_text(text)
        train(load_recipe(root / f"{name}.yaml"), root / name, progress="none")
        out[name] = root / name
    return out


def test_a_regression_output_clipped_by_calibration_fails_the_gate(runs):
    run = runs["reg"]
    # one calibration row: the int8 output range ends near that row's value, the test rows go past it
    narrow = export_run(run, ["tflite"], "int8", out_dir=run / "narrow", representative_samples=1)
    int8 = next(a for a in narrow.artifacts if a.quantization == "int8")
    sat = int8.checks["saturation"]
    assert int8.status == "failed" and sat["clipped"] > 0, int8.checks
    assert sat["keras_max"] > sat["range"][1] or sat["keras_min"] < sat["range"][0]
    assert any("beyond the int8 output range" in f and "clipped" in f for f in int8.checks["failures"])
    manifest = json.loads((run / "narrow" / "manifest.json").read_text())
    assert manifest["passed"] is False
    wide = export_run(run, ["tflite"], "int8", out_dir=run / "wide")  # every training row calibrates
    wider = next(a for a in wide.artifacts if a.quantization == "int8")
    assert wider.checks["saturation"]["clipped"] < sat["clipped"]
    clipped = any("beyond the int8 output range" in f for f in wider.checks["failures"])
    assert clipped == (wider.checks["saturation"]["clipped"] > 0)


@pytest.mark.slow  # quick tier under 10 min: heavier cases run in make test-slow (CI runs both)
def test_ops_left_in_float_and_quantization_that_did_nothing_are_reported(runs, cli):
    run = runs["cls"]
    res = export_run(run, ["tflite"], "int8", out_dir=run / "int8")
    int8 = next(a for a in res.artifacts if a.quantization == "int8")
    assert int8.float_ops == ["ELU"], int8.float_ops  # its QUANTIZE / DEQUANTIZE boundary is not listed
    assert any("ops run in float inside the int8 model: ELU" in w for w in int8.warnings)
    assert int8.status == "failed" and "ops run in float inside the int8 model: ELU" in int8.failure()
    assert int8.checks["top1_agreement"] >= 0.98  # its outputs alone would pass: the float op fails it
    assert int8.delegation["fully_accelerated"] is not None
    allowed = export_run(run, ["tflite"], "int8", out_dir=run / "int8_allowed", int8_float_fallback=True)
    assert next(a for a in allowed.artifacts if a.quantization == "int8").status == "passed"
    # 6x8 and 8x3 kernels: under the 1,024 values dynamic-range quantization needs
    res = export_run(run, ["tflite"], "dynamic", out_dir=run / "dynamic")
    dyn = next(a for a in res.artifacts if a.quantization == "dynamic")
    assert any(w.startswith("nothing was quantized") for w in dyn.warnings), dyn.warnings
    saved = json.loads((run / "dynamic" / "manifest.json").read_text())["artifacts"]
    assert any("nothing was quantized" in w for a in saved for w in a.get("warnings", []))
    r = cli("export", run, "--tflite", "--quantize", "dynamic", "--out", run / "dynamic2")
    assert r.exit_code == 0 and "warning: model_dynamic.tflite: nothing was quantized" in r.stderr
    float16 = next(a for a in export_run(run, ["tflite"], "float16", out_dir=run / "f16").artifacts
                   if a.quantization == "float16")
    assert float16.warnings == [] and int8.quantization == "int8"


def test_int16x8_is_exported_run_in_litert_and_gated(runs, cli):
    run = runs["reg_all"]
    res = export_run(run, ["tflite"], "int16x8", out_dir=run / "x16")
    by_q = {a.quantization: a for a in res.artifacts}
    wide = by_q["int16x8"]
    assert wide.name == "model_int16x8.tflite" and wide.status == "passed", wide.checks
    assert wide.inputs[0]["dtype"] == "int16" and wide.outputs[0]["dtype"] == "int16"
    assert wide.inputs[0]["scale"] > 0 and by_q["none"].status == "passed"
    assert wide.float_ops == [] and wide.warnings == []
    int8 = next(a for a in export_run(run, ["tflite"], "int8", out_dir=run / "x8").artifacts
                if a.quantization == "int8")
    # 16-bit activations: the outputs follow Keras more closely than int8's
    assert wide.checks["mean_abs_error"] < int8.checks["mean_abs_error"]
    assert wide.checks["saturation"]["clipped"] == 0 and wide.checks["saturation"]["range"][1] > 0
    r = cli("benchmark", run / "x16" / "model_int16x8.tflite", "--runs", "5", "--json")
    assert r.exit_code == 0, r.stderr
    result = json.loads(r.stdout)["results"][0]
    assert result["quantization"] == "int16x8" and result["latency_ms"]["p50"] > 0
    assert "cannot hold int16" in result["native"]["skipped"] and result["native"]["latency_ms"] == {}
    assert result["python_overhead_ms"] is None
    r = cli("export", run, "--tflite", "--quantize", "int4", "--out", run / "x4")
    assert r.exit_code == 2 and "int16x8" in r.stderr


WIDE = ("name: wide\nseed: 3\n"
        "data: {source: synthetic, samples: 240, shape: [32], num_classes: 3, noise: 0.3, split: {test: 0.25}}\n"
        f"model: {{architecture: mlp, units: [64, 64]}}\n{TRAIN}\n")


def test_onnx_int8_is_quantized_by_onnxruntime_and_gated(tmp_path, cli):
    import onnx

    (tmp_path / "wide.yaml").write_text(WIDE)
    run = train(load_recipe(tmp_path / "wide.yaml"), tmp_path / "wide", progress="none").run_dir
    res = export_run(run, ["onnx"], onnx_quantize="int8")
    by_name = {a.name: a for a in res.artifacts}
    assert list(by_name) == ["model.onnx", "model_int8.onnx"]
    q = by_name["model_int8.onnx"]
    assert q.status == "passed" and q.format == "onnx" and q.quantization == "int8", q.checks
    assert q.checks["top1_agreement"] >= 0.98 and q.runtime == "onnxruntime"
    assert q.size_bytes < 0.7 * by_name["model.onnx"].size_bytes  # int8 weights (plus Q/DQ nodes and scales)
    ops = {n.op_type for n in onnx.load(run / "export" / "model_int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    entropy = export_run(run, ["onnx"], onnx_quantize="int8", onnx_calibration="entropy", out_dir=run / "entropy")
    assert entropy.artifacts[-1].status == "passed", entropy.artifacts[-1].checks
    r = cli("benchmark", run / "export" / "model_int8.onnx", "--runs", "5", "--json")
    assert r.exit_code == 0, r.stderr
    m = json.loads(r.stdout)["results"][0]
    assert m["quantization"] == "int8" and m["native"]["latency_ms"]["p50"] > 0
    r = cli("export", run, "--onnx", "--onnx-quantize", "int8", "--onnx-calibration", "kl", "--out", run / "kl")
    assert r.exit_code == 2 and "'--onnx-calibration': 'kl' is not one of" in r.stderr and "percentile" in r.stderr
    dyn = export_run(run, ["onnx"], onnx_quantize="dynamic", out_dir=run / "dynamic")  # no calibration rows
    d = {a.name: a for a in dyn.artifacts}["model_dynamic.onnx"]
    assert d.status == "passed" and d.quantization == "dynamic" and dyn.calibration is None, d.checks
    graph = onnx.load(run / "dynamic" / "model_dynamic.onnx").graph
    assert "DynamicQuantizeLinear" in {n.op_type for n in graph.node}  # activations quantized at run time
    assert any(i.data_type == onnx.TensorProto.INT8 for i in graph.initializer)  # int8 weights
    assert d.size_bytes < 0.7 * by_name["model.onnx"].size_bytes


@pytest.mark.slow  # quick tier under 10 min: heavier cases run in make test-slow
def test_a_thin_calibration_set_is_reported(runs, cli):
    run = runs["cls"]
    res = export_run(run, ["tflite"], "int8", out_dir=run / "thin", representative_samples=1)
    cal = res.calibration
    assert cal["rows"] == 1 and len(cal["classes_missing"]) == 2  # one row holds one of the 3 classes
    assert any("fewer than 100" in w for w in cal["warnings"])
    assert any("no example of 2 class(es)" in w for w in cal["warnings"])
    assert json.loads((run / "thin" / "manifest.json").read_text())["calibration"] == cal
    r = cli("export", run, "--tflite", "--quantize", "int8", "--representative-samples", "1", "--out", run / "thin2")
    assert "warning: quantization calibrated on 1 rows" in r.stderr
    full = export_run(run, ["tflite"], "int8", out_dir=run / "full")  # every training row (104), every class
    assert full.calibration["rows"] == 104 and full.calibration["classes_missing"] == []
    assert full.calibration["warnings"] == []


RAW_INPUTS = """
version: 1
name: raw_inputs
seed: 42
data:
  source: csv
  path: {data}
  label_column: diagnosis
  normalize: none          # features from 0.001 to 4,000 share one input scale: int8 rounds the small ones away
  split: {{validation: 0.0, test: 0.2}}
model: {{architecture: mlp, units: [32, 16], activation: gelu, normalization: batch}}
train: {{epochs: 10, batch_size: 32, optimizer: {{name: adam, learning_rate: 0.003}}, callbacks: {{tensorboard: false}}}}
"""


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory):
    from conftest import REPO

    root = tmp_path_factory.mktemp("raw")
    (root / "r.yaml").write_text(RAW_INPUTS.format(data=REPO / "data" / "breast_cancer" / "breast_cancer.csv"))
    train(load_recipe(root / "r.yaml"), root / "run", progress="none")
    return root / "run"


@pytest.mark.slow  # quick tier under 10 min: heavier cases run in make test-slow (CI runs both)
def test_explain_ranks_layers_and_fallback_keeps_the_worst_in_float(raw_run, cli):
    from ai_edge_litert.interpreter import Interpreter

    plain = cli("export", raw_run, "--tflite", "--quantize", "int8", "--explain", "--out", raw_run / "plain", "--json")
    assert plain.exit_code == 6, plain.stderr  # plain int8 fails its gate
    int8 = next(a for a in json.loads(plain.stdout)["artifacts"] if a["quantization"] == "int8")
    layers = int8["sensitivity"]
    assert layers[0]["op"] == "FULLY_CONNECTED" and layers[0]["suspect"], layers  # the layer that sees raw inputs
    assert all(not e["suspect"] for e in layers[1:]) and int8.get("fallback") is None
    assert layers == sorted(layers, key=lambda e: -e["rmse_over_scale"])
    res = cli("export", raw_run, "--tflite", "--quantize", "int8", "--fallback", "auto", "--json")  # RUN_DIR/export
    assert res.exit_code == 0, res.stderr
    fixed = next(a for a in json.loads(res.stdout)["artifacts"] if a["quantization"] == "int8")
    fb = fixed["fallback"]
    assert fixed["status"] == "passed" and fb["passed"] and fb["layers"] == [layers[0]["tensor"]]
    step = fb["steps"][0]
    assert step["size_bytes"] == fixed["size_bytes"] and step["native_p50_ms"] > 0
    assert fixed["checks"]["top1_agreement"] > int8["checks"]["top1_agreement"]
    assert fixed["inputs"][0]["dtype"] == "float32" and "FULLY_CONNECTED" in fixed["float_ops"]
    interp = Interpreter(model_path=str(raw_run / "export" / "model_int8.tflite"))  # still an int8 model inside
    assert any(d["dtype"].__name__ == "int8" for d in interp.get_tensor_details())
    assert any("--fallback auto kept 1 layer(s) in float" in w for w in fixed["warnings"])
    report = cli("report", raw_run, "--json")
    assert report.exit_code == 0, report.stderr
    assert any(p.endswith("sensitivity_model_int8.tflite.png") for p in json.loads(report.stdout)["images"])
    mcu = cli("package", raw_run, "--target", "mcu", "--out", raw_run / "p.zip")
    assert "--fallback auto did so to pass the parity gate" in one_line_error(mcu, 2)
    assert not (raw_run / "p.zip").exists()


def test_fallback_that_cannot_pass_keeps_the_plain_int8_file(raw_run, cli):
    res = cli("export", raw_run, "--tflite", "--quantize", "int8", "--fallback", "auto", "--fallback-budget", "1",
              "--max-abs-error", "1e-9", "--out", raw_run / "spent", "--json")
    assert res.exit_code == 6
    int8 = next(a for a in json.loads(res.stdout)["artifacts"] if a["quantization"] == "int8")
    assert int8["status"] == "failed" and not int8["fallback"]["passed"] and len(int8["fallback"]["steps"]) == 1
    assert int8["inputs"][0]["dtype"] == "int8"  # the plain int8 file, not a half-fallen-back one
    assert any("the gate still fails with 1 layer(s) in float" in w for w in int8["warnings"])
    assert [p.name for p in (raw_run / "spent").iterdir() if p.name.startswith(".")] == []  # no trial file left


@pytest.mark.slow
def test_onnx_int8_explains_and_falls_back_node_by_node(raw_run, cli):
    import onnx

    plain = cli("export", raw_run, "--onnx", "--onnx-quantize", "int8", "--explain", "--out", raw_run / "onnx_plain",
                "--json")
    q = next(a for a in json.loads(plain.stdout)["artifacts"] if a["name"] == "model_int8.onnx")
    assert plain.exit_code == 6 and q["status"] == "failed", q["checks"]  # raw inputs: one int8 scale for all
    tensors = q["sensitivity"]
    rank = [min(e["qdq_sqnr_db"], e["channel_sqnr_db"] if e["channel_sqnr_db"] is not None else math.inf)
            for e in tensors]
    assert rank == sorted(rank) and tensors[0]["nodes"]
    inputs = {i.name for i in onnx.load(raw_run / "onnx_plain" / "model.onnx").graph.input}
    assert tensors[0]["tensor"] in inputs and tensors[0]["channel_sqnr_db"] < 10 < tensors[0]["qdq_sqnr_db"], tensors[0]
    assert "quantization noise per tensor" in cli("export", raw_run, "--onnx", "--onnx-quantize", "int8",
                                                  "--explain", "--out", raw_run / "onnx_table").stdout
    res = cli("export", raw_run, "--onnx", "--onnx-quantize", "int8", "--fallback", "auto", "--json")  # RUN/export
    assert res.exit_code == 0, res.stderr
    fixed = next(a for a in json.loads(res.stdout)["artifacts"] if a["name"] == "model_int8.onnx")
    fb = fixed["fallback"]
    assert fixed["status"] == "passed" and fb["passed"] and fb["nodes"] == fb["steps"][-1]["float_nodes"]
    assert fb["steps"][-1]["size_bytes"] == fixed["size_bytes"] and fb["steps"][-1]["native_p50_ms"] > 0
    assert fixed["checks"]["top1_agreement"] > q["checks"]["top1_agreement"]
    graph = onnx.load(raw_run / "export" / "model_int8.onnx").graph
    assert "QuantizeLinear" in {n.op_type for n in graph.node}  # still quantized, apart from the excluded nodes
    assert set(fb["nodes"]) <= {n.name for n in graph.node}  # they run in float, under their own names
    assert [p.name for p in (raw_run / "export").iterdir() if p.name.startswith(".")] == []
    report = cli("report", raw_run, "--json")
    assert report.exit_code == 0, report.stderr
    assert any(p.endswith("sensitivity_model_int8.onnx.png") for p in json.loads(report.stdout)["images"])


def test_worst_channel_sqnr_sees_the_small_feature_that_one_scale_rounds_away():
    from dlcli.export.onnx_fallback import worst_channel_sqnr

    rng = np.random.default_rng(0)
    x = np.stack([rng.uniform(0, 4000, 64), rng.uniform(0, 0.1, 64), np.zeros(64)], axis=1)  # 3 features
    scale = 4000 / 255
    q = np.round(x / scale) * scale  # one int8 scale for the whole tensor: feature 1 becomes 0
    whole = 10 * np.log10((x ** 2).sum() / ((x - q) ** 2).sum())
    worst = worst_channel_sqnr(list(x), list(q))
    assert whole > 30 and abs(worst) < 1e-6  # the tensor looks fine; its small feature lost everything
    assert worst_channel_sqnr(list(x), list(x)) == math.inf  # nothing lost; the all-zero feature is skipped

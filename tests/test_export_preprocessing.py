"""``export.include_preprocessing``: exported models that take raw values, gated on raw values."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlcli.recipe.loader import load_recipe
from dlcli.train import train

CSV_RECIPE = """
name: rawcsv
seed: 2
data:
  source: csv
  path: d.csv
  label_column: y
  reshape: [2, 3, 1]
  normalize: {method: standard, axis: global}
  split: {validation: 0.2, test: 0.2}
model: {architecture: cnn, filters: [4], dense: [8]}
train: {epochs: 8, batch_size: 16, optimizer: {name: adam, learning_rate: 0.02}, callbacks: {tensorboard: false}}
export: {include_preprocessing: true}
"""


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("rawcsv")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    x = rng.normal(50 + 20 * y[:, None], 10, (200, 6))  # far from normalized: baking it in matters
    rows = ["a,b,c,d,e,f,y", *(",".join(f"{v:.3f}" for v in r) + f",{k}" for r, k in zip(x, y, strict=True))]
    (root / "d.csv").write_text("\n".join(rows) + "\n")
    (root / "r.yaml").write_text(CSV_RECIPE)
    train(load_recipe(root / "r.yaml"), root / "run", progress="none", pipeline=False)
    return root


def test_exports_take_raw_values_and_pass_the_gate_on_them(csv_run, cli, tmp_path):
    run = csv_run / "run"
    r = cli("export", run, "--all", "--quantize", "int8", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    manifest = json.loads(r.stdout)
    for a in manifest["artifacts"]:
        assert a["status"] == "passed" and a["preprocessing"] == "included", a
        assert a["inputs"][0]["shape"][1:] == [6], a  # the CSV's six values, before reshape
    int8 = next(a for a in manifest["artifacts"] if a["name"] == "model_int8.tflite")
    assert int8["inputs"][0]["scale"] > 0.1  # calibrated on raw values (tens), not on normalized ones
    # predict and evaluate through an artifact feed it raw values, the run dir feeds Keras normalized ones
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b,c,d,e,f\n70,72,68,71,69,70\n50,48,52,49,51,50\n")
    keras_top = json.loads(cli("predict", run, rows, "--json").stdout)["predictions"]
    for name in ("model_int8.tflite", "model.onnx", "saved_model"):
        r = cli("predict", run / "export" / name, rows, "--json")
        assert r.exit_code == 0, r.stderr
        got = json.loads(r.stdout)["predictions"]
        assert [p["top"][0]["label"] for p in got] == [p["top"][0]["label"] for p in keras_top], name
    r = cli("evaluate", run, "--artifact", run / "export" / "model.onnx", "--json")
    keras = cli("evaluate", run, "--json")
    assert json.loads(r.stdout)["metrics"]["accuracy"] == pytest.approx(json.loads(keras.stdout)["metrics"]["accuracy"])
    r = cli("benchmark", run, "--runs", "3", "--json")
    assert r.exit_code == 0, r.stderr
    accs = {m["name"]: m["metric"]["value"] for m in json.loads(r.stdout)["results"]}
    assert accs["model.onnx"] == pytest.approx(accs["keras"])


def test_separate_preprocessing_is_the_default_and_a_flag(csv_run, cli):
    r = cli("export", csv_run / "run", "--onnx", "--separate-preprocessing", "--out", csv_run / "sep", "--json")
    assert r.exit_code == 0, r.stderr
    a = json.loads(r.stdout)["artifacts"][0]
    assert a["preprocessing"] == "separate" and a["inputs"][0]["shape"][1:] == [2, 3, 1]


def test_image_run_with_preprocessing_inside(tmp_path, cli):
    from test_streaming import _folder, _recipe

    _folder(tmp_path / "img")
    recipe = _recipe(tmp_path)
    train(load_recipe(recipe), tmp_path / "run", progress="none", pipeline=False)
    r = cli("export", tmp_path / "run", "--tflite", "--onnx", "--quantize", "int8", "--include-preprocessing", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    for a in json.loads(r.stdout)["artifacts"]:
        assert a["status"] == "passed", a
        assert a["inputs"][0]["shape"][1:] == [8, 8, 3]
    r = cli("predict", tmp_path / "run" / "export" / "model_int8.tflite", tmp_path / "img" / "light", "--json")
    assert r.exit_code == 0, r.stderr
    top = [p["top"][0]["label"] for p in json.loads(r.stdout)["predictions"]]
    assert top.count("light") >= 0.8 * len(top)

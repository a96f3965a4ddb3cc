"""Several named inputs of mixed types (``data.inputs``): train, evaluate, predict, export
to every format with int8 through the parity gate, and package."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from dlcli.recipe.loader import load_recipe

REPO = Path(__file__).resolve().parent.parent

WORDS = {0: ["calm", "quiet", "still"], 1: ["loud", "busy", "noisy"]}


def _mixed_csv(path: Path, n: int = 240, seed: int = 0) -> None:
    """Numeric columns, a categorical column and a free-text column, each carrying signal."""
    rng = np.random.default_rng(seed)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "b", "color", "note", "label"])
        for _ in range(n):
            k = int(rng.integers(0, 2))
            a, b = rng.normal(1.5 * k, 1.0), rng.normal(-k, 1.0)
            color = rng.choice(["red", "green"] if k else ["blue", "green"])
            note = " ".join(rng.choice(WORDS[k] if rng.random() < 0.8 else WORDS[1 - k], 3))
            w.writerow([f"{a:.4f}", f"{b:.4f}", color, note, ["no", "yes"][k]])


MIXED = """
name: mixed
seed: 4
data:
  source: csv
  path: mixed.csv
  label_column: label
  normalize: standard
  split: {validation: 0.2, test: 0.2}
  inputs:
    numbers: {columns: [a, b]}
    color: {columns: [color], type: categorical}
    note: {columns: [note], type: text, max_tokens: 20, sequence_length: 4}
model: {architecture: mlp, units: [16], embedding_dim: 4}
train:
  epochs: 15
  batch_size: 16
  optimizer: {name: adam, learning_rate: 0.01}
  callbacks: {tensorboard: false}
"""


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    from dlcli.train import train

    root = tmp_path_factory.mktemp("mixed")
    _mixed_csv(root / "mixed.csv")
    (root / "r.yaml").write_text(MIXED)
    result = train(load_recipe(root / "r.yaml"), root / "run", progress="none", pipeline=False)
    return root, result


def test_mixed_inputs_train_and_keep_their_own_preprocessing(mixed_run):
    root, result = mixed_run
    assert result.metrics["test"]["accuracy"] >= 0.85
    pre = json.loads((root / "run" / "preprocessing.json").read_text())
    assert set(pre["inputs"]) == {"numbers", "color", "note"}
    assert pre["inputs"]["numbers"]["input_shape"] == [2] and pre["inputs"]["numbers"]["normalize"]["method"] == "standard"
    assert pre["inputs"]["color"]["featurizer"]["vocab"] == {"color": ["blue", "green", "red"]}
    assert pre["inputs"]["color"]["input_dtype"] == "int32" and pre["inputs"]["note"]["input_shape"] == [4]
    import keras

    model = keras.saving.load_model(root / "run" / "model.keras", safe_mode=True)
    assert sorted(t.name.split(":")[0] for t in model.inputs) == ["color", "note", "numbers"]


def test_mixed_inputs_evaluate_and_predict(mixed_run, cli, tmp_path):
    root, result = mixed_run
    r = cli("evaluate", root / "run", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["metrics"]["accuracy"] == pytest.approx(result.metrics["test"]["accuracy"], abs=1e-6)
    rows = tmp_path / "rows.csv"
    rows.write_text("a,b,color,note\n2.5,-1.2,red,loud busy noisy\n-0.5,0.3,blue,calm quiet still\n"
                    "0.0,0.0,purple,never seen words\n")  # an unseen colour and unseen words are allowed
    r = cli("predict", root / "run", rows, "--json")
    assert r.exit_code == 0, r.stderr
    top = [p["top"][0]["label"] for p in json.loads(r.stdout)["predictions"]]
    assert top[:2] == ["yes", "no"]
    missing = tmp_path / "missing.csv"
    missing.write_text("a,b,color\n1,2,red\n")
    r = cli("predict", root / "run", missing)
    assert r.exit_code == 3 and "'note'" in r.stderr and "Traceback" not in r.stderr


def test_mixed_inputs_export_to_every_format_with_int8(mixed_run):
    from dlcli.export import export_run
    from dlcli.rundir import open_run, run_split

    root, _ = mixed_run
    res = export_run(root / "run", ["saved_model", "tflite", "onnx"], "int8")
    by = {a.name: a for a in res.artifacts}
    assert all(a.status == "passed" for a in res.artifacts), {a.name: (a.error, a.checks) for a in res.artifacts}
    assert {"model_int8.tflite", "model.onnx", "model_float32.tflite", "saved_model"} <= set(by)
    for a in res.artifacts:  # every input named in every runtime
        names = " ".join(t["name"] for t in a.inputs)
        assert all(n in names for n in ("numbers", "color", "note")), (a.name, names)
    int8 = {t["name"]: t for t in by["model_int8.tflite"].inputs}
    assert any(t["dtype"] == "int8" for t in int8.values())  # the numeric input is quantized
    assert sum(t["dtype"] == "int32" for t in int8.values()) == 2  # ids stay ids
    from dlcli.export.registry import format_of

    x, y = run_split(open_run(root / "run"), "test")
    path = root / "run" / "export" / "model.onnx"
    pred = format_of(path).load(path).predict(x)
    assert float(np.mean(pred.argmax(-1) == y)) >= 0.8


def test_graph_with_two_inputs_needs_two_data_inputs(write_recipe, cli):
    recipe = write_recipe("""
        name: two
        data: {source: synthetic, samples: 64, shape: [4]}
        model:
          graph:
            inputs: [{name: a}, {name: b}]
            nodes:
              - {name: m, type: Concatenate, inputs: [a, b]}
              - {name: out, type: Dense, units: 2, activation: softmax, inputs: [m]}
            outputs: [out]
        train: {epochs: 1}
    """)
    r = cli("train", recipe, "--run-dir", recipe.parent / "run")
    assert r.exit_code == 3, r.stderr
    assert "data.inputs" in r.stderr and "model.graph.inputs.0" in r.stderr and "Traceback" not in r.stderr


def test_a_missing_input_column_names_the_input(tmp_path, cli):
    _mixed_csv(tmp_path / "mixed.csv", n=40)
    (tmp_path / "r.yaml").write_text(MIXED.replace("columns: [note]", "columns: [notes]"))
    r = cli("train", tmp_path / "r.yaml", "--run-dir", tmp_path / "run")
    assert r.exit_code == 3, r.stderr
    assert "data.inputs.note" in r.stderr and "'notes'" in r.stderr and str(tmp_path / "mixed.csv") in r.stderr
    assert not (tmp_path / "run" / "model.keras").exists()


def test_graph_input_that_is_not_a_data_input_is_named(tmp_path, cli):
    _mixed_csv(tmp_path / "mixed.csv", n=40)
    text = MIXED.replace("model: {architecture: mlp, units: [16], embedding_dim: 4}", """model:
  graph:
    inputs: [{name: numbers}, {name: colour}]
    nodes:
      - {name: out, type: Dense, units: 2, activation: softmax, inputs: [numbers]}
    outputs: [out]""")
    (tmp_path / "r.yaml").write_text(text)
    r = cli("train", tmp_path / "r.yaml", "--run-dir", tmp_path / "run")
    assert r.exit_code == 3, r.stderr
    assert "'colour'" in r.stderr and "numbers" in r.stderr


def test_other_architectures_refuse_several_inputs(tmp_path, cli):
    _mixed_csv(tmp_path / "mixed.csv", n=40)
    (tmp_path / "r.yaml").write_text(MIXED.replace("architecture: mlp, units: [16], embedding_dim: 4",
                                                   "architecture: cnn"))
    r = cli("train", tmp_path / "r.yaml", "--run-dir", tmp_path / "run")
    assert r.exit_code == 2, r.stderr
    assert "architecture cnn takes one input" in r.stderr


def test_inputs_exclude_single_input_keys(tmp_path):
    from dlcli.errors import RecipeError

    (tmp_path / "r.yaml").write_text(MIXED.replace("  normalize: standard\n", "  normalize: standard\n  reshape: [2]\n"))
    with pytest.raises(RecipeError, match="reshape cannot be combined with inputs"):
        load_recipe(tmp_path / "r.yaml")
    (tmp_path / "r.yaml").write_text(MIXED.replace("type: text, max_tokens", "type: text, columns: [a, note], max_tokens")
                                     .replace("note: {columns: [note], ", "note: {"))
    with pytest.raises(RecipeError, match="exactly one column"):
        load_recipe(tmp_path / "r.yaml")


@pytest.mark.slow
def test_shipped_two_input_recipe_exports_gates_and_packages(tmp_path, cli):
    run = tmp_path / "run"
    r = cli("train", REPO / "recipes" / "breast_cancer_two_inputs.yaml", "--run-dir", run, "--quiet",
            "--set", "train.epochs=12")
    assert r.exit_code == 0, r.stderr
    r = cli("export", run, "--all", "--quantize", "int8", "--json")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert all(a["status"] == "passed" for a in json.loads(r.stdout)["artifacts"])
    r = cli("benchmark", run, "--runs", "5", "--json")
    assert r.exit_code == 0, r.stderr
    assert len(json.loads(r.stdout)["results"]) >= 4
    assert cli("report", run).exit_code == 0
    pkg = tmp_path / "pkg.zip"
    r = cli("package", run, "--target", "tflite-int8", "--out", pkg)
    assert r.exit_code == 0, r.stderr
    assert cli("package", "verify", pkg).exit_code == 0
    import zipfile

    readme = zipfile.ZipFile(pkg).read("README.md").decode()
    assert "mean" in readme and "worst" in readme
    r = cli("package", run, "--target", "mcu", "--out", tmp_path / "mcu.zip")
    assert r.exit_code == 2 and "several inputs" in r.stderr
    assert not (tmp_path / "mcu.zip").exists()


def test_mixed_inputs_export_with_their_preprocessing_inside(mixed_run):
    from dlcli.export import export_run

    root, _ = mixed_run
    res = export_run(root / "run", ["tflite", "onnx"], "int8", out_dir=root / "raw", include_preprocessing=True)
    assert all(a.status == "passed" for a in res.artifacts), {a.name: (a.error, a.checks) for a in res.artifacts}
    assert all(a.preprocessing == "included" for a in res.artifacts)

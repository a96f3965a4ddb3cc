"""The CLI through Typer's CliRunner: exit codes, one-line errors, --json output."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import one_line_error

from dlcli.errors import EXIT_CODE_DOCS, ExitCode


def test_version_and_help(cli):
    r = cli("--version")
    assert r.exit_code == 0 and r.stdout.startswith("dlcli ")
    r = cli("--help")
    assert r.exit_code == 0
    for cmd in ("train", "validate", "schema", "init", "evaluate", "predict"):
        assert cmd in r.stdout


def test_validate_ok_and_json(cli, tiny_recipe):
    r = cli("validate", tiny_recipe)
    assert r.exit_code == 0 and r.stdout.startswith("ok: ")
    r = cli("validate", tiny_recipe, "--json")
    assert json.loads(r.stdout) == {"recipe": str(tiny_recipe), "valid": True, "name": "tiny",
                                    "task": "classification", "data_source": "synthetic", "model": "mlp"}


def test_validate_errors_are_one_line_with_exit_2(cli, tiny_recipe, write_recipe):
    line = one_line_error(cli("validate", tiny_recipe, "--set", "train.epohcs=3"), 2)
    assert "train.epohcs" in line and "did you mean 'epochs'" in line
    bad = write_recipe("name: x\ndata: {source: synthetic\n", "bad.yaml")
    line = one_line_error(cli("validate", bad), 2)
    assert "bad.yaml:" in line and "YAML syntax error" in line
    line = one_line_error(cli("validate", tiny_recipe.parent / "absent.yaml"), 2)
    assert "recipe file not found" in line
    line = one_line_error(cli("validate", tiny_recipe, "--set", "novalue"), 2)
    assert "KEY.PATH=VALUE" in line


def test_schema_prints_json_schema(cli, tmp_path):
    r = cli("schema")
    assert r.exit_code == 0
    assert json.loads(r.stdout)["title"].startswith("dlcli recipe")
    r = cli("schema", "--out", tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())["type"] == "object"


def test_init_writes_templates_that_validate(cli, tmp_path):
    from dlcli.cli.cmd_init import template_names

    names = template_names()
    assert {"mlp", "cnn", "rnn", "transformer", "autoencoder", "transfer", "layers", "graph", "text"} <= set(names)
    for name in names:
        target = tmp_path / f"{name}.yaml"
        r = cli("init", name, target)
        assert r.exit_code == 0, r.stderr
        assert cli("validate", target).exit_code == 0
    line = one_line_error(cli("init", "mlp", tmp_path / "mlp.yaml"), 5)
    assert "already exists" in line
    assert cli("init", "mlp", tmp_path / "mlp.yaml", "--force").exit_code == 0
    line = one_line_error(cli("init", "cnnn"), 2)
    assert "did you mean 'cnn'" in line
    assert json.loads(cli("init", "rnn", tmp_path / "j.yaml", "--json").stdout) == {
        "path": str(tmp_path / "j.yaml"), "template": "rnn"}
    assert set(json.loads(cli("init", "--list", "--json").stdout)["templates"]) == set(names)


def test_train_json_prints_exactly_one_object(cli, tiny_recipe, tmp_path):
    run = tmp_path / "run"
    r = cli("train", tiny_recipe, "--run-dir", run, "--json", "--quiet")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)  # the whole of stdout is one JSON document
    assert r.stdout.count("\n") == 1
    assert out["run_dir"] == str(run) and out["epochs"] == 3 and out["duration_s"] > 0
    assert out["metrics"] == json.loads((run / "metrics.json").read_text())
    assert "epoch 1/3" in r.stderr  # progress goes to stderr, one plain line per epoch
    # evaluate and predict on the finished run
    r = cli("evaluate", run, "--json")
    ev = json.loads(r.stdout)
    assert ev["split"] == "test" and ev["metrics"]["accuracy"] == pytest.approx(out["metrics"]["test"]["accuracy"])
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    r = cli("predict", run, tmp_path / "x.npy", "--json", "--top-k", "2")
    preds = json.loads(r.stdout)["predictions"]
    assert len(preds) == 4 and all(len(p["top"]) == 2 for p in preds)
    assert all(abs(sum(t["probability"] for t in p["top"])) <= 1.0 + 1e-5 for p in preds)
    r = cli("predict", run, tmp_path / "x.npy")
    assert r.exit_code == 0 and "x.npy[3]" in r.stdout
    # an existing run directory is refused without --overwrite
    line = one_line_error(cli("train", tiny_recipe, "--run-dir", run), 5)
    assert str(run) in line and "--overwrite" in line
    line = one_line_error(cli("evaluate", run, "--split", "holdout"), 2)
    assert "holdout" in line


def test_train_data_errors_exit_3(cli, write_recipe, tmp_path):
    path = write_recipe("""
        name: missing
        data: {source: csv, path: nowhere.csv, label_column: label}
        model: {architecture: mlp}
    """)
    line = one_line_error(cli("train", path, "--run-dir", tmp_path / "r"), 3)
    assert "nowhere.csv" in line
    path = write_recipe("""
        name: head
        data: {source: synthetic, samples: 60, shape: [4], num_classes: 4}
        model: {layers: [{type: Dense, units: 2, activation: softmax}]}
    """, "h.yaml")
    line = one_line_error(cli("train", path, "--run-dir", tmp_path / "r2"), 3)
    assert "labels out of range" in line and "(None, 2)" in line


def test_code_models_need_allow_code(cli, write_recipe, tmp_path):
    path = write_recipe("""
        name: code
        data: {source: synthetic, samples: 60, shape: [4]}
        model: {code: "os:getcwd"}
    """)
    for command in (["train", path, "--run-dir", tmp_path / "r"], ["validate", path]):
        line = one_line_error(cli(*command), 2)
        assert f"{path}:3:" in line and "model.code" in line and "--allow-code" in line


def test_diverged_training_exits_4(cli, tiny_recipe, tmp_path):
    r = cli("train", tiny_recipe, "--run-dir", tmp_path / "r", "--quiet", "--set", "train.optimizer.name=sgd",
            "--set", "train.optimizer.learning_rate=1.0e+12", "--set", "train.epochs=2")
    line = one_line_error(r, 4)
    assert "NaN" in line and "learning_rate" in line


def test_exit_codes_are_documented():
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "cli.md").read_text()
    for code in ExitCode:
        assert f"| {int(code)} |" in doc, f"exit code {int(code)} missing from docs/cli.md"
        assert EXIT_CODE_DOCS[code].split(" (")[0].split(":")[0] in doc


def test_code_running_layers_need_allow_code(cli, write_recipe, tmp_path):
    path = write_recipe("""
        name: tfsm
        data: {source: synthetic, samples: 60, shape: [4]}
        model: {layers: [{type: TFSMLayer, filepath: /tmp/anything, call_endpoint: serve}]}
    """)
    line = one_line_error(cli("train", path, "--run-dir", tmp_path / "r"), 2)
    assert "model.layers.0.type: TFSMLayer" in line and "--allow-code" in line


@pytest.mark.parametrize("layer", [
    # two wrappers deep: TimeDistributed -> TimeDistributed -> TFSMLayer
    "{type: TimeDistributed, layer: {type: TimeDistributed, layer: {type: TFSMLayer, filepath: /tmp/x}}}",
    "{type: Bidirectional, layer: {type: LSTM, units: 2}, backward_layer: {class_name: Lambda, config: {}}}",
    "{type: RNN, cell: [{type: GRUCell, units: 2}, {type: keras.layers.TFSMLayer}]}",
])
def test_code_running_layers_are_found_at_any_depth(cli, write_recipe, tmp_path, layer):
    path = write_recipe(f"""
        name: nested
        data: {{source: synthetic, samples: 60, shape: [4]}}
        model: {{layers: [{{type: Dense, units: 2}}, {layer}]}}
    """)
    for command in (["train", path, "--run-dir", tmp_path / "r"], ["validate", path]):
        line = one_line_error(cli(*command), 2)
        assert line.startswith(f"error: {path}:3:") and "model.layers.1.type:" in line and "--allow-code" in line
    assert not (tmp_path / "r").exists()
    assert cli("validate", path, "--allow-code").exit_code == 0


def test_validate_catches_schedule_and_smoothing_mistakes(cli, tiny_recipe):
    line = one_line_error(cli("validate", tiny_recipe, "--set",
                              "train.optimizer.learning_rate={schedule: step, initial: 0.1, boundaries: [1], warmup_epochs: 1}"), 2)
    assert "warmup_epochs" in line
    line = one_line_error(cli("validate", tiny_recipe, "--set", "train.loss={label_smoothing: 0.1}"), 2)
    assert "label_smoothing" in line


def test_usage_errors_are_one_line_and_choices_come_from_the_schema(cli, tiny_recipe, monkeypatch):
    from dlcli.recipe.schema import ExportSpec, PruneSpec
    from dlcli.recipe.train import TrainSpec

    line = one_line_error(cli("train", tiny_recipe, "--epochs", "3"), 2)  # an unknown option
    assert "dlcli train" in line and "--epochs" in line
    line = one_line_error(cli("train", tiny_recipe, "--strategy", "hyper"), 2)
    assert "'hyper'" in line and "multi_worker" in line
    assert "Missing argument" in one_line_error(cli("package", "verify"), 2)
    assert "No such command" in one_line_error(cli("trian"), 2)
    import typing

    monkeypatch.setenv("COLUMNS", "300")  # no wrapping inside a <a|b|c> list
    for command, spec, field in (("prune", PruneSpec, "structure"), ("export", ExportSpec, "onnx_calibration"),
                                 ("train", TrainSpec, "strategy")):
        text = cli(command, "--help").stdout
        allowed = typing.get_args(spec.model_fields[field].annotation)
        assert all(value in text for value in allowed), (command, field)  # listed by --help, from the schema

"""Export: architecture x format x quantization, each artifact run by its real runtime.

Models are tiny and trained for a few epochs on easy synthetic (or generated text)
data so their predictions are confident: the default parity gates must pass as they
are, with no loosening for tests.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from dlcli.export import export_run
from dlcli.recipe.loader import load_recipe
from dlcli.train import train

COMMON_TRAIN = "train: {epochs: 6, batch_size: 32, optimizer: {name: adam, learning_rate: 0.01}, callbacks: {tensorboard: false}}"

MODELS = {
    "mlp": ("data: {source: synthetic, samples: 400, shape: [10], num_classes: 3, noise: 0.3, split: {test: 0.25}}",
            "model: {architecture: mlp, units: [16], dropout: 0.1}"),
    "cnn": ("data: {source: synthetic, kind: image, samples: 400, shape: [8, 8, 1], num_classes: 3, noise: 0.3, split: {test: 0.25}}",
            "model: {architecture: cnn, filters: [8, 16], normalization: batch, dropout: 0.2}"),
    "lstm": ("data: {source: synthetic, kind: sequence, samples: 400, shape: [6, 4], num_classes: 3, noise: 0.3, split: {test: 0.25}}",
             "model: {architecture: rnn, cell: lstm, units: [12]}"),
    "gru": ("data: {source: synthetic, kind: sequence, samples: 400, shape: [6, 4], num_classes: 3, noise: 0.3, split: {test: 0.25}}",
            "model: {architecture: rnn, cell: gru, units: [12]}"),
    "bilstm": ("data: {source: synthetic, kind: sequence, samples: 400, shape: [6, 4], num_classes: 3, noise: 0.3, split: {test: 0.25}}",
               "model: {architecture: rnn, cell: lstm, units: [8], bidirectional: true}"),
    "transformer": ("data: {source: synthetic, kind: sequence, samples: 400, shape: [6, 4], num_classes: 3, noise: 0.3, split: {test: 0.25}}",
                    "model: {architecture: transformer, embed_dim: 16, num_heads: 2, ff_dim: 16, num_blocks: 1}"),
    "autoencoder": ("task: reconstruction\ndata: {source: synthetic, kind: image, samples: 400, shape: [8, 8, 1], num_classes: 3, noise: 0.3, normalize: minmax, split: {test: 0.25, stratify: false}}",
                    "model: {architecture: autoencoder, kind: conv, filters: [8, 16], output_activation: sigmoid}"),
    "text": ("data: {source: text, path: texts.csv, max_tokens: 50, sequence_length: 12, split: {test: 0.25}}",
             ("model: {layers: [{type: Embedding, input_dim: 50, output_dim: 8}, {type: GlobalAveragePooling1D}, "
             "{type: Dense, units: 2, activation: softmax}]}")),
    "augmented": (("data: {source: synthetic, kind: image, samples: 400, shape: [8, 8, 1], num_classes: 3, noise: 0.3, split: {test: 0.25}, "
                  "augment: {flip: horizontal, rotation: 0.05, zoom: 0.1, noise: 0.05}}"),
                  "model: {architecture: cnn, filters: [8, 16], normalization: batch}"),
}


def _texts(path):
    rng = np.random.default_rng(0)
    good, bad = ["great", "fine", "lovely", "superb", "happy"], ["awful", "poor", "sad", "broken", "ugly"]
    filler = ["the", "a", "film", "was", "it", "and", "very", "plot"]
    rows = ["text,label"]
    for i in range(400):
        words = list(rng.choice(filler, 6)) + list(rng.choice(good if i % 2 else bad, 3))
        rng.shuffle(words)
        rows.append(f"{' '.join(words)},{'pos' if i % 2 else 'neg'}")
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train each model once for the whole module."""
    root = tmp_path_factory.mktemp("export_runs")
    _texts(root / "texts.csv")
    cache = {}

    def get(name):
        if name not in cache:
            data, model = MODELS[name]
            recipe = root / f"{name}.yaml"
            recipe.write_text(f"name: {name}\nseed: 3\n{data}\n{model}\n{COMMON_TRAIN}\n")
            train(load_recipe(recipe), root / name, progress="none")
            cache[name] = root / name
        return cache[name]

    return get


def _check_all_passed(result):
    failed = [(a.name, a.error or a.checks.get("failures")) for a in result.artifacts if a.status != "passed"]
    assert not failed, failed
    manifest = json.loads((result.out_dir / "manifest.json").read_text())
    assert manifest["passed"] is True
    for a in manifest["artifacts"]:
        assert a["size_bytes"] > 0 and len(a["sha256"]) == 64 and a["conversion_seconds"] > 0
        assert a["inputs"] and a["outputs"] and a["checks"]["samples"] >= 90
        path = result.out_dir / a["path"]
        assert path.exists()


# int8 TFLite of these keeps ops in float (attention's NEG); the gate fails them unless allowed
FLOAT_OPS_IN_INT8 = {"transformer"}
# an unrolled LSTM's gate SPLIT may stay in float with per-channel scales, depending on the
# trained weights (the BiLSTM did on one CPU and not on another): allowed, never required
MAY_KEEP_IN_FLOAT = {"lstm": {"SPLIT"}, "bilstm": {"SPLIT"}}
# the quick tier exports a vector and an image model; the rest (text among them) run with -m slow
QUICK_EXPORTS = ("mlp", "cnn")


@pytest.mark.parametrize("name", [n if n in QUICK_EXPORTS else pytest.param(n, marks=pytest.mark.slow) for n in MODELS])
def test_every_model_exports_to_every_format_and_passes(runs, name):
    run = runs(name)
    result = export_run(run, ["saved_model", "tflite", "onnx"], "int8")
    plain = next(a for a in result.artifacts if a.quantization == "int8")
    if name in FLOAT_OPS_IN_INT8:
        assert plain.float_ops
    else:
        assert set(plain.float_ops) <= MAY_KEEP_IN_FLOAT.get(name, set()), plain.float_ops
    if plain.float_ops:  # the converter leaves these in float: the gate fails them unless they are allowed
        assert plain.status == "failed" and "ops run in float inside the int8 model" in plain.failure()
        result = export_run(run, ["saved_model", "tflite", "onnx"], "int8", int8_float_fallback=True,
                            out_dir=run / "export_float_ops")
    _check_all_passed(result)
    names = [a.name for a in result.artifacts]
    assert names == ["saved_model", "model_float32.tflite", "model_int8.tflite", "model.onnx"]
    int8 = next(a for a in result.artifacts if a.quantization == "int8")
    if name == "text":  # token ids stay integers; the output is int8
        assert int8.inputs[0]["dtype"] == "int32"
    else:
        assert int8.inputs[0]["dtype"] == "int8" and int8.inputs[0]["scale"] > 0
    assert int8.outputs[0]["dtype"] == "int8"
    for q in ("dynamic", "float16"):
        _check_all_passed(export_run(run, ["tflite"], q, out_dir=run / f"export_{q}"))


@pytest.mark.parametrize("name", [pytest.param("lstm", marks=pytest.mark.slow), "gru",
                                  pytest.param("bilstm", marks=pytest.mark.slow)])  # gru in the quick tier
def test_recurrent_tflite_uses_builtin_ops_only(runs, name):
    from dlcli.export.tflite import TFLiteRunner

    run = runs(name)
    export_run(run, ["tflite"], "int8", out_dir=run / "export_ops")
    for file in ("model_float32.tflite", "model_int8.tflite"):
        ops = TFLiteRunner(run / "export_ops" / file).ops()
        assert not [op for op in ops if op.startswith("Flex") or op == "CUSTOM"], ops
        assert "DELEGATE" not in ops and "FULLY_CONNECTED" in ops


def test_augmentation_never_reaches_the_exported_model(runs):
    import onnx

    run = runs("augmented")
    result = export_run(run, ["onnx"])
    _check_all_passed(result)
    graph = onnx.load(result.out_dir / "model.onnx").graph
    assert not [n.op_type for n in graph.node if n.op_type.startswith("Random")]
    import keras

    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert not [layer for layer in model._flatten_layers() if type(layer).__name__.startswith("Random")]


def test_impossible_gate_fails_with_parity_exit_code(runs, cli):
    run = runs("mlp")
    out = run / "export_tight"
    r = cli("export", run, "--tflite", "--onnx", "--out", out, "--max-abs-error", "1e-15", "--json")
    assert r.exit_code == 6
    manifest = json.loads(r.stdout)
    assert manifest["passed"] is False
    failed = [a for a in manifest["artifacts"] if a["status"] == "failed"]
    assert failed and all("max abs error" in a["checks"]["failures"][0] for a in failed)
    assert json.loads((out / "manifest.json").read_text()) == manifest
    err = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "failed" in err[0] and "manifest.json" in err[0]
    assert (out / "model.onnx").exists()  # a failed artifact is kept


def test_conversion_that_writes_nothing_is_a_failure(runs, monkeypatch):
    import sys

    from dlcli.export import registry

    registry.formats()
    fake = type(sys)("fake_format")
    fake.export = lambda model, target, plan: None  # a "converter" that reports success and writes nothing
    fake.load = lambda path: None
    monkeypatch.setitem(registry._FORMATS, "onnx", registry.Format("onnx", ".onnx", fake.export, fake.load, "none"))
    run = runs("mlp")
    result = export_run(run, ["onnx"], out_dir=run / "export_nothing")
    assert result.failed and "produced no file" in result.failed[0].error


def test_a_dlcli_bug_in_conversion_is_exit_1_not_a_failed_artifact(runs, cli, monkeypatch):
    """A programming error raised in dlcli's own code is a bug (exit 1, its traceback with
    --debug), not the user's model failing to convert (exit 6); a converter's own refusal
    stays a failed artifact (the test above)."""
    from dlcli.export import signature

    monkeypatch.setattr(signature, "input_signature", None)  # export/tflite.py calls it: a TypeError in dlcli
    run = runs("mlp")
    out = run / "export_bug"
    r = cli("export", run, "--tflite", "--out", out)
    assert r.exit_code == 1, (r.exit_code, r.stderr)
    assert "internal error" in r.stderr.lower() or "bug" in r.stderr.lower(), r.stderr
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]  # nothing half-written left


def test_is_dlcli_bug_tells_dlcli_frames_from_library_frames():
    import json as stdlib_json

    from dlcli.errors import is_dlcli_bug
    from dlcli.recipe.overrides import apply_overrides

    try:
        apply_overrides(None, {})  # dlcli code on a None spec: AttributeError raised in dlcli
    except AttributeError as exc:
        assert is_dlcli_bug(exc)
    try:
        stdlib_json.loads(None)  # a TypeError raised by the library
    except TypeError as exc:
        assert not is_dlcli_bug(exc)
    assert not is_dlcli_bug(ValueError("a value a user gave"))


def test_cli_export_evaluate_and_predict_artifacts(runs, cli, tmp_path):
    run = runs("cnn")
    r = cli("export", run, "--all", "--quantize", "int8", "--json")
    assert r.exit_code == 0, r.stderr
    manifest = json.loads(r.stdout)
    assert manifest["passed"] and len(manifest["artifacts"]) == 4
    test_x = np.random.default_rng(1).normal(size=(3, 8, 8, 1)).astype("float32")
    np.save(tmp_path / "x.npy", test_x)
    keras_pred = json.loads(cli("predict", run, tmp_path / "x.npy", "--json").stdout)["predictions"]
    for artifact in ("saved_model", "model_float32.tflite", "model_int8.tflite", "model.onnx"):
        path = run / "export" / artifact
        r = cli("evaluate", run, "--artifact", path, "--json")
        assert r.exit_code == 0, r.stderr
        acc = json.loads(r.stdout)["metrics"]["accuracy"]
        assert acc == pytest.approx(manifest["keras"]["value"], abs=0.02)
        r = cli("predict", path, tmp_path / "x.npy", "--json")
        assert r.exit_code == 0, r.stderr
        preds = json.loads(r.stdout)["predictions"]
        assert [p["label"] for p in preds] == [p["label"] for p in keras_pred]


def test_a_savedmodel_dlcli_did_not_export_runs_only_with_allow_code(runs, cli, tmp_path):
    """Its graph is code: unlisted in a manifest, or changed since export, it needs --allow-code."""
    import shutil

    run = runs("cnn")
    r = cli("export", run, "--saved-model", "--json")
    assert r.exit_code == 0, r.stderr
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8, 1), np.float32))
    foreign = run / "export" / "foreign_sm"  # beside the manifest, not listed in it
    shutil.copytree(run / "export" / "saved_model", foreign)
    try:
        for args in (("predict", foreign, tmp_path / "x.npy"), ("evaluate", run, "--artifact", foreign),
                     ("benchmark", foreign, "--runs", "2")):
            r = cli(*args)
            assert r.exit_code == 2 and "--allow-code" in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
            assert cli(*args, "--allow-code").exit_code == 0, args
        # a listed SavedModel whose files changed after export is foreign too
        (run / "export" / "saved_model" / "fingerprint.pb").write_bytes(b"changed")
        r = cli("predict", run / "export" / "saved_model", tmp_path / "x.npy")
        assert r.exit_code == 2 and "--allow-code" in r.stderr
    finally:
        shutil.rmtree(foreign)
        cli("export", run, "--saved-model")  # restore for the module's other tests


def test_evaluating_a_run_with_another_runs_artifact_is_refused(runs, cli):
    cnn, mlp = runs("cnn"), runs("mlp")
    if not (cnn / "export" / "model.onnx").exists():
        assert cli("export", cnn, "--onnx").exit_code == 0
    r = cli("evaluate", mlp, "--artifact", cnn / "export" / "model.onnx")
    assert r.exit_code == 2 and f"exported from {cnn}" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_export_without_run_dir_takes_the_latest_run(runs, cli, tmp_path, monkeypatch):
    import shutil

    run = runs("mlp")
    (tmp_path / "runs").mkdir()
    shutil.copytree(run, tmp_path / "runs" / "only", ignore=shutil.ignore_patterns("export*"))
    monkeypatch.chdir(tmp_path)
    r = cli("export", "--onnx")
    assert r.exit_code == 0, r.stderr
    assert "using the most recent run: runs/only" in r.stderr
    assert (tmp_path / "runs" / "only" / "export" / "model.onnx").exists()

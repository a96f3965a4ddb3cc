"""Training end to end on tiny synthetic data: the run directory and its guarantees."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from dlcli.errors import DataError, RunDirError, ShapeMismatchError, TrainingDivergedError
from dlcli.recipe.loader import load_recipe, recipe_hash
from dlcli.train import train

RUN_FILES = ["model.keras", "recipe.yaml", "metrics.json", "history.csv", "env.json", "preprocessing.json",
             "labels.txt", "checkpoints/last.keras", "checkpoints/best.keras"]


def test_run_directory_is_complete_and_reloads(tiny_recipe, tmp_path):
    import keras

    from dlcli.evaluate import evaluate

    recipe = load_recipe(tiny_recipe, ["train.callbacks.tensorboard=true"])
    res = train(recipe, tmp_path / "run", progress="none")
    run = tmp_path / "run"
    for name in RUN_FILES:
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").rglob("*tfevents*"))
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) == {"train", "validation", "test"}
    assert set(metrics["test"]) == {"loss", "accuracy"}
    assert metrics == res.metrics
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert len(rows) == res.epochs_run == 3
    assert {"epoch", "loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(rows[0])
    env = json.loads((run / "env.json").read_text())
    assert env["status"] == "completed" and env["seed"] == 7
    assert len(env["data_fingerprint"]) == 64 and env["tensorflow"].startswith("2.")
    assert env["keras"].startswith("3.") and env["python"] and env["devices"]
    assert env["recipe_hash"] == recipe_hash(load_recipe(run / "recipe.yaml"))
    assert (run / "labels.txt").read_text().split() == ["0", "1", "2"]
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    assert model.count_params() == env["parameters"]
    again = evaluate(run, "test")
    assert again.metrics["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert not again.data_changed
    # no temporary files are left behind
    assert not [p for p in run.rglob("*") if ".tmp" in p.name]


def test_same_seed_gives_same_metrics(tiny_recipe, tmp_path):
    recipe = load_recipe(tiny_recipe)
    a = train(recipe, tmp_path / "a", progress="none")
    b = train(load_recipe(tiny_recipe), tmp_path / "b", progress="none")
    assert a.metrics == b.metrics
    c = train(load_recipe(tiny_recipe, ["seed=8"]), tmp_path / "c", progress="none")
    assert c.metrics != a.metrics


def test_loss_falls(tiny_recipe, tmp_path):
    res = train(load_recipe(tiny_recipe, ["train.epochs=5"]), tmp_path / "r", progress="none")
    assert res.history[-1]["loss"] < res.history[0]["loss"]
    assert res.metrics["test"]["accuracy"] > 0.6  # 3 classes: chance is 0.33


def test_nan_loss_exits_diverged_and_keeps_last_good_checkpoint(tiny_recipe, tmp_path):
    # epoch 1 trains normally; from epoch 2 the rate is 1e9 and the loss becomes inf/NaN
    recipe = load_recipe(tiny_recipe, [
        "task=regression", "data.kind=regression", "train.loss=mse", "train.optimizer.name=sgd",
        "train.optimizer.learning_rate={schedule: step, initial: 0.01, boundaries: [1], factor: 1.0e+11}",
        "train.epochs=4"])
    run = tmp_path / "r"
    with pytest.raises(TrainingDivergedError, match="epoch 2") as info:
        train(recipe, run, progress="none")
    assert info.value.exit_code == 4
    assert "last good checkpoint kept" in str(info.value)
    assert (run / "checkpoints" / "last.keras").exists()
    assert not (run / "model.keras").exists()
    assert json.loads((run / "env.json").read_text())["status"] == "diverged"
    import keras

    last = keras.saving.load_model(run / "checkpoints" / "last.keras", safe_mode=True)
    assert all(np.isfinite(w).all() for w in last.get_weights())


def test_existing_run_dir_needs_overwrite(tiny_recipe, tmp_path):
    run = tmp_path / "r"
    train(load_recipe(tiny_recipe, ["train.epochs=1"]), run, progress="none")
    with pytest.raises(RunDirError, match="--overwrite"):
        train(load_recipe(tiny_recipe, ["train.epochs=1"]), run, progress="none")
    train(load_recipe(tiny_recipe, ["train.epochs=1"]), run, overwrite=True, progress="none")
    assert (run / "model.keras").exists()


def test_overwrite_refuses_a_folder_that_is_not_a_run(tiny_recipe, tmp_path):
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "thesis.tex").write_text("do not delete")
    with pytest.raises(RunDirError, match="not a dlcli run directory"):
        train(load_recipe(tiny_recipe), folder, overwrite=True, progress="none")
    assert (folder / "thesis.tex").read_text() == "do not delete"


def test_overwrite_never_deletes_what_dlcli_did_not_write(tiny_recipe, tmp_path, monkeypatch):
    """The project folder (cwd, the recipe's or the data's folder, home) is never a run
    directory; a folder with a look-alike env.json is not a run; in a real run, --overwrite
    removes only what dlcli writes there."""
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / ".git").mkdir()
    (proj / "notes.txt").write_text("mine")
    np.savez(proj / "data" / "d.npz", x=np.random.default_rng(0).normal(size=(40, 3)), y=np.arange(40) % 2)
    (proj / "recipe.yaml").write_text("name: p\ndata: {source: numpy, path: data/d.npz}\n"
                                      "model: {architecture: mlp, units: [4]}\ntrain: {epochs: 1}\n")
    (proj / "env.json").write_text('{"status": "completed"}')  # not dlcli's
    monkeypatch.chdir(proj)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    recipe = load_recipe(proj / "recipe.yaml")
    for run_dir, why in ((".", "current directory"), (proj / "data", "holds"), (tmp_path, "holds"),
                         (tmp_path / "home", "home directory")):
        with pytest.raises(RunDirError, match=why):
            train(recipe, run_dir, overwrite=True, progress="none")
    (proj / "env.json").unlink()
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "env.json").write_text('{"status": "completed"}')
    with pytest.raises(RunDirError, match="not a dlcli run directory"):
        train(recipe, tmp_path / "fake", overwrite=True, progress="none")
    assert sorted(p.name for p in proj.iterdir()) == [".git", "data", "notes.txt", "recipe.yaml"]
    run = tmp_path / "run"
    train(recipe, run, progress="none")
    assert json.loads((run / "env.json").read_text())["format"] == "dlcli-run/1"
    (run / "my-notes.md").write_text("kept")
    (run / "report_files").mkdir()  # what `dlcli report` writes beside report.html
    train(recipe, run, overwrite=True, progress="none")
    assert (run / "my-notes.md").read_text() == "kept" and (run / "model.keras").exists()
    assert not (run / "report_files").exists()


def test_unwritable_run_dir(tiny_recipe, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunDirError, match="cannot write"):
        train(load_recipe(tiny_recipe), blocker / "run", progress="none")


def test_labels_out_of_range_for_output_layer(write_recipe, tmp_path):
    path = write_recipe("""
        name: bad_head
        data: {source: synthetic, samples: 60, shape: [4], num_classes: 5}
        model:
          layers:
            - {type: Dense, units: 3, activation: softmax}
        train: {epochs: 1}
    """)
    with pytest.raises(ShapeMismatchError, match=r"labels out of range.*\(None, 3\)|\(None, 3\).*labels out of range") as info:
        train(load_recipe(path), tmp_path / "r", progress="none")
    assert "5 classes" in str(info.value)


def test_input_shape_mismatch_names_both_shapes(write_recipe, tmp_path):
    path = write_recipe("""
        name: bad_shape
        data: {source: synthetic, samples: 60, shape: [4]}
        model:
          input_shape: [5]
          layers: [{type: Dense, units: 2, activation: softmax}]
    """)
    with pytest.raises(ShapeMismatchError, match=r"\(5,\).*\(4,\)"):
        train(load_recipe(path), tmp_path / "r", progress="none")


def test_empty_and_missing_data(write_recipe, tmp_path):
    (tmp_path / "empty.csv").write_text("a,b,label\n")
    path = write_recipe("""
        name: empty
        data: {source: csv, path: empty.csv, label_column: label}
        model: {architecture: mlp}
    """)
    with pytest.raises(DataError, match="no data rows"):
        train(load_recipe(path), tmp_path / "r1", progress="none")
    path = write_recipe("""
        name: missing
        data: {source: csv, path: nowhere.csv, label_column: label}
        model: {architecture: mlp}
    """, "m.yaml")
    with pytest.raises(DataError, match="nowhere.csv: data file not found"):
        train(load_recipe(path), tmp_path / "r2", progress="none")


@pytest.mark.parametrize("overrides", [
    ["train.optimizer={name: sgd, learning_rate: 0.05, momentum: 0.9, nesterov: true}"],
    ["train.optimizer={name: adamw, weight_decay: 0.001, learning_rate: {schedule: cosine, initial: 0.01, warmup_epochs: 1}}"],
    ["train.optimizer={name: rmsprop, learning_rate: {schedule: exponential, initial: 0.01, decay_rate: 0.5}}"],
    ["train.optimizer={name: lion, learning_rate: {schedule: step, initial: 0.001, boundaries: [1]}}"],
    ["train.loss={name: categorical_crossentropy, label_smoothing: 0.1}", "train.metrics=[accuracy, auc]"],
    ["train.mixed_precision=mixed_bfloat16"],
    ["train.jit_compile=true", "train.deterministic=false"],
    ["data.class_weight=balanced", "train.callbacks.reduce_lr_on_plateau={patience: 0}"],
])
def test_training_options(tiny_recipe, tmp_path, overrides):
    res = train(load_recipe(tiny_recipe, ["train.epochs=2", *overrides]), tmp_path / "r", progress="none")
    assert all(np.isfinite(v) for m in res.metrics.values() for v in m.values())
    assert res.epochs_run == 2


def test_early_stopping_stops_and_restores(tiny_recipe, tmp_path):
    res = train(load_recipe(tiny_recipe, [
        "train.epochs=10", "train.callbacks.early_stopping={monitor: val_loss, patience: 1, min_delta: 100}"]),
        tmp_path / "r", progress="none")
    assert res.epochs_run == 2  # nothing improves by 100: stop after patience + 1 epochs
    kept = train(load_recipe(tiny_recipe, [
        "train.epochs=10", ("train.callbacks.early_stopping={monitor: val_loss, patience: 1, min_delta: 100, "
        "restore_best_weights: true}")]), tmp_path / "kept", progress="none")
    assert kept.kept_epoch == 1 and kept.to_json()["kept_epoch"] == 1  # said, not silent
    assert json.loads((tmp_path / "kept" / "env.json").read_text())["kept_epoch"] == 1


def test_regression_and_reconstruction(write_recipe, tmp_path):
    reg = write_recipe("""
        name: reg
        task: regression
        data: {source: synthetic, kind: regression, samples: 120, shape: [5], normalize: standard}
        model: {architecture: mlp, units: [8]}
        train: {epochs: 2, callbacks: {tensorboard: false}}
    """)
    res = train(load_recipe(reg), tmp_path / "reg", progress="none")
    assert set(res.metrics["test"]) == {"loss", "mae"}
    ae = write_recipe("""
        name: ae
        task: reconstruction
        data: {source: synthetic, kind: image, samples: 80, shape: [8, 8, 1], normalize: minmax,
               split: {stratify: false}}
        model: {architecture: autoencoder, kind: conv, filters: [4], output_activation: sigmoid}
        train: {epochs: 2, callbacks: {tensorboard: false}}
    """, "ae.yaml")
    res = train(load_recipe(ae), tmp_path / "ae", progress="none")
    assert res.metrics["test"]["loss"] < 0.5
    assert not (tmp_path / "ae" / "labels.txt").exists()


@pytest.mark.parametrize("interval", [0, 3600])
def test_best_checkpoint_holds_the_best_epoch(tiny_recipe, tmp_path, interval):
    """Written live (interval 0) or from the in-memory snapshot at the end (long interval)."""
    import keras

    from dlcli.data import load_data

    recipe = load_recipe(tiny_recipe, ["train.epochs=6", "train.optimizer.learning_rate=0.05",
                                       f"train.callbacks.checkpoint.min_interval_seconds={interval}"])
    res = train(recipe, tmp_path / "r", progress="none")
    val_losses = [h["val_loss"] for h in res.history]
    bundle = load_data(recipe)
    val = bundle.splits["validation"].dataset(32)
    best = keras.saving.load_model(tmp_path / "r" / "checkpoints" / "best.keras", safe_mode=True)
    assert best.evaluate(val, verbose=0, return_dict=True)["loss"] == pytest.approx(min(val_losses), rel=1e-5)
    last = keras.saving.load_model(tmp_path / "r" / "checkpoints" / "last.keras", safe_mode=True)
    assert last.evaluate(val, verbose=0, return_dict=True)["loss"] == pytest.approx(val_losses[-1], rel=1e-5)
    # the optimizer state travels with the checkpoint (needed to resume)
    steps = -(-len(bundle.train) // 16)
    assert int(last.optimizer.iterations.numpy()) == 6 * steps

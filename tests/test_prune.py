"""Magnitude pruning on Keras 3: masks, schedules, 2:4, saved sparsity, export, errors."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from dlcli.compress.masks import (
    check_n_of_m,
    global_magnitude_masks,
    magnitude_mask,
    n_of_m_mask,
    polynomial_sparsity,
)
from dlcli.recipe.loader import load_recipe
from dlcli.train import train

RECIPE = """
name: prunable
seed: 4
data: {source: synthetic, kind: image, samples: 400, shape: [8, 8, 1], num_classes: 3, noise: 0.3, split: {test: 0.25}}
model: {architecture: cnn, filters: [8, 16], dense: [16], normalization: batch}
train: {epochs: 5, batch_size: 32, optimizer: {name: adam, learning_rate: 0.01}, callbacks: {tensorboard: false}}
"""


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("prune")
    (root / "r.yaml").write_text(RECIPE)
    train(load_recipe(root / "r.yaml"), root / "dense", progress="none")
    return root / "dense"


def test_magnitude_mask_keeps_exactly_the_largest():
    w = np.random.default_rng(0).normal(size=(13, 7)).astype(np.float32)
    m = magnitude_mask(w, 0.8)
    assert int(m.sum()) == round(0.2 * w.size)
    assert np.abs(w[m == 1]).min() >= np.abs(w[m == 0]).max()


def test_global_masks_share_one_threshold():
    rng = np.random.default_rng(1)
    ws = [rng.normal(size=(10, 10)).astype(np.float32), 10 * rng.normal(size=(5, 4)).astype(np.float32)]
    ms = global_magnitude_masks(ws, 0.5)
    assert sum(int(m.sum()) for m in ms) == round(0.5 * 120)
    kept = np.concatenate([np.abs(w[m == 1]) for w, m in zip(ws, ms, strict=True)])
    dropped = np.concatenate([np.abs(w[m == 0]) for w, m in zip(ws, ms, strict=True)])
    assert kept.min() >= dropped.max()
    assert ms[1].mean() > ms[0].mean()  # the large-magnitude layer keeps more


def test_n_of_m_mask_groups_along_the_input_axis():
    w = np.random.default_rng(2).normal(size=(3, 3, 10, 6)).astype(np.float32)  # conv kernel, input axis 2
    m = n_of_m_mask(w, 2)
    assert check_n_of_m(w * m, 2)
    moved = np.moveaxis(m, 2, -1)
    for start in range(0, 8, 4):
        assert np.all(moved[..., start:start + 4].sum(-1) == 2)
    assert np.all(moved[..., 8:10].sum(-1) == 2)  # a partial group of 2 keeps both
    assert not check_n_of_m(np.ones((8, 4)), 0)


def test_polynomial_schedule():
    vals = [polynomial_sparsity(s, 0, 100, 0.0, 0.8) for s in range(0, 121, 10)]
    assert vals[0] == 0.0 and vals[-1] == pytest.approx(0.8) and vals[10] == pytest.approx(0.8)
    assert all(b >= a for a, b in itertools.pairwise(vals))


def test_graph_masks_match_the_numpy_reference():
    import tensorflow as tf

    from dlcli.compress import graph_masks as g

    rng = np.random.default_rng(3)
    w = rng.normal(size=(3, 3, 10, 6)).astype(np.float32)
    for s in (0.0, 0.3, 0.8, 0.95):
        np.testing.assert_array_equal(g.magnitude_mask(tf.constant(w), tf.constant(s, tf.float64)).numpy(),
                                      magnitude_mask(w, s))
    ws = [rng.normal(size=(10, 10)).astype(np.float32), 10 * rng.normal(size=(5, 4)).astype(np.float32)]
    for got, want in zip(g.global_masks([tf.constant(x) for x in ws], tf.constant(0.5, tf.float64)),
                         global_magnitude_masks(ws, 0.5), strict=True):
        np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(g.n_of_m_mask(tf.constant(w), 2).numpy(), n_of_m_mask(w, 2))
    for step in (0, 7, 50, 99, 120):
        assert float(g.polynomial_sparsity(tf.constant(step), 0, 100, 0.1, 0.8)) == pytest.approx(
            polynomial_sparsity(step, 0, 100, 0.1, 0.8))


def _graph_pruner(model, sparsity, schedule="constant", end=100, frequency=5):
    from dlcli.compress.graph_masks import GraphPruner
    from dlcli.compress.prune import prunable_weights

    return GraphPruner(prunable_weights(model), sparsity=sparsity, schedule=schedule, structure="unstructured",
                       scope="layer", begin=0, end=end, frequency=frequency, initial_sparsity=0.0,
                       iterations=model.optimizer.iterations)


def test_masked_weights_stay_zero_after_every_optimizer_step(dense_run):
    """The masks are applied inside the compiled step, right after the optimizer update."""
    import keras
    import tensorflow as tf

    from dlcli.rundir import open_run, run_split

    run = open_run(dense_run)
    model = run.load_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    model.optimizer.build(model.trainable_variables)
    pruner = _graph_pruner(model, 0.6)
    x, y = run_split(run, "train")
    step = tf.function(pruner.wrap(model.train_step))
    for i in range(8):
        step((tf.constant(x[i * 32:(i + 1) * 32]), tf.constant(y[i * 32:(i + 1) * 32])))
        for t, m in zip(pruner.targets, pruner.masks, strict=True):
            m = m.numpy()
            assert m.mean() == pytest.approx(0.4, abs=0.01)
            assert np.all(t.variable.numpy()[m == 0] == 0.0)
    tf.function(model.train_step)((tf.constant(x[:32]), tf.constant(y[:32])))  # one step without the masks
    t, m = pruner.targets[0], pruner.masks[0].numpy()
    assert np.any(t.variable.numpy()[m == 0] != 0.0)  # the optimizer does move them: masking keeps them zero


def test_prune_reaches_target_on_saved_weights_and_exports(dense_run, tmp_path, cli):
    import keras

    r = cli("prune", dense_run, "--sparsity", "0.8", "--epochs", "5", "--run-dir", tmp_path / "p", "--json",
            "--scope", "layer", "--min-size", "0", "--prune-first-conv")
    assert r.exit_code == 0, r.stderr
    out = json.loads(r.stdout)
    run = tmp_path / "p"
    for name in ("model.keras", "recipe.yaml", "metrics.json", "history.csv", "env.json", "sparsity.json",
                 "preprocessing.json", "labels.txt"):
        assert (run / name).exists(), name
    model = keras.saving.load_model(run / "model.keras", safe_mode=True)
    dense = keras.saving.load_model(dense_run / "model.keras", safe_mode=True)
    assert [type(a).__name__ for a in model.layers] == [type(a).__name__ for a in dense.layers]  # no wrappers
    kernels = [l.kernel.numpy() for l in model.layers if type(l).__name__ in ("Conv2D", "Dense")]
    assert kernels
    for k in kernels:
        assert abs(np.mean(k == 0) - 0.8) <= 0.01
    saved = json.loads((run / "sparsity.json").read_text())
    assert abs(saved["prunable_sparsity"] - 0.8) <= 0.01 and out["sparsity"] == saved["prunable_sparsity"]
    assert saved["sizes"]["tflite_gzip"] < saved["sizes"]["dense_tflite_gzip"]
    assert out["metrics"]["test"]["accuracy"] >= 0.8
    # the pruned model goes through the export parity gate like any run
    r = cli("export", run, "--tflite", "--onnx", "--quantize", "int8", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["passed"]


@pytest.mark.slow  # quick tier under 10 min: heavier cases run in make test-slow
def test_two_four_structure_holds_group_by_group(dense_run, tmp_path):
    from dlcli.compress.prune import prune

    res = prune(dense_run, tmp_path / "p24", structure="2:4", epochs=2, progress="none", min_size=0,
                keep_first_conv=False)
    import keras

    model = keras.saving.load_model(res.run_dir / "model.keras", safe_mode=True)
    checked = 0
    for layer in model.layers:
        if type(layer).__name__ in ("Conv2D", "Dense"):
            assert check_n_of_m(layer.kernel.numpy(), layer.kernel.ndim - 2), layer.name
            checked += 1
    assert checked >= 3
    assert res.sparsity["structure"] == "2:4"


@pytest.mark.slow
def test_exclude_leaves_a_layer_dense(dense_run, tmp_path):
    from dlcli.compress.prune import prune

    res = prune(dense_run, tmp_path / "px", sparsity=0.5, epochs=1, exclude=["head"], progress="none")
    names = [layer["layer"] for layer in res.sparsity["layers"]]
    assert "head" not in names and names


def test_bad_input_is_reported(dense_run, tmp_path, cli):
    r = cli("prune", dense_run, "--sparsity", "1.0", "--run-dir", tmp_path / "a")
    assert r.exit_code == 2 and "[0, 1)" in r.stderr
    r = cli("prune", dense_run, "--sparsity", "-0.1", "--run-dir", tmp_path / "b")
    assert r.exit_code == 2
    empty = tmp_path / "empty_run"
    empty.mkdir()
    r = cli("prune", empty, "--run-dir", tmp_path / "c")
    assert r.exit_code == 5 and ("model.keras" in r.stderr or "recipe.yaml" in r.stderr)
    r = cli("prune", dense_run, "--structure", "3:4", "--run-dir", tmp_path / "d")
    assert r.exit_code == 2 and "2:4" in r.stderr
    r = cli("prune", dense_run, "--exclude", "nope", "--run-dir", tmp_path / "e")
    assert r.exit_code == 2 and "nope" in r.stderr


def test_polynomial_schedule_reaches_the_target_at_the_end_step_whatever_the_frequency(dense_run):
    """With end 18 and frequency 10 the masks used to stop at step 10's sparsity, and the
    target was forced on at the end with no fine-tuning left to recover."""
    import keras
    import tensorflow as tf

    from dlcli.rundir import open_run

    model = open_run(dense_run).load_model()
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    pruner = _graph_pruner(model, 0.8, "polynomial", end=18, frequency=10)
    due = [s for s in range(25) if bool(pruner._due(tf.constant(s, tf.int64)))]
    assert due == [0, 10, 18]
    assert 0.0 < float(pruner.sparsity_at(tf.constant(10))) < 0.8
    assert float(pruner.sparsity_at(tf.constant(18))) == pytest.approx(0.8)

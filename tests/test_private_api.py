"""The private attributes of Keras, TensorFlow, LiteRT and Optuna that dlcli uses (listed in
docs/design.md with the versions they were checked against): each test fails loudly when an
upgrade renames or removes one, instead of dlcli failing silently or late."""

from __future__ import annotations

import inspect

import keras
import numpy as np


def _functional():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, name="hidden")(inputs)
    inner = keras.Sequential([keras.layers.Dense(2, name="nested")], name="inner")
    return keras.Model(inputs, inner(hidden)), inner


def test_keras_layer_graph_attributes():
    model, inner = _functional()
    names = [layer.name for layer in model._flatten_layers(include_self=False)]  # prune, export, qat
    assert {"hidden", "inner", "nested"} <= set(names)
    hidden = model.get_layer("hidden")
    assert len(hidden._inbound_nodes) == 1 and len(hidden._outbound_nodes) == 1  # qat: the layer graph
    assert hidden._outbound_nodes[0].operation is inner


def test_keras_symbolic_build_exists_with_its_argument():
    params = inspect.signature(keras.Model._symbolic_build).parameters  # the loop builds metrics as fit() does
    assert "data_batch" in params


def test_tflite_converter_and_debugger_attributes(tmp_path):
    import tensorflow as tf

    model, _ = _functional()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    assert hasattr(conv, "_experimental_disable_per_channel")  # export: --int8-per-tensor
    assert "self._debug_options" in inspect.getsource(tf.lite.experimental.QuantizationDebugger.__init__)


def test_litert_interpreter_ops_details(tmp_path):
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    model, _ = _functional()
    model(np.zeros((1, 4), "float32"))
    it = Interpreter(model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert())
    ops = it._get_ops_details()  # latency (delegation) and the float-op check
    assert ops and "op_name" in ops[0]


def test_optuna_frozen_trial_id(tmp_path):
    import optuna

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    frozen = study.trials[0]
    assert isinstance(frozen._trial_id, int)  # tune: continue a cut trial by its storage id
    assert optuna.trial.Trial(study, frozen._trial_id).number == 0


def test_typer_vendored_click_errors():
    from typer._click import exceptions  # cli/choices.py: one-line usage errors catch these

    assert issubclass(exceptions.NoArgsIsHelpError, exceptions.UsageError)
    import typer

    assert issubclass(typer.BadParameter, exceptions.UsageError)  # what a bad --flag value raises

"""dlcli/recipe/keras_names.py lists exactly the installed Keras's layer classes and applications.

The recipe schema validates `type:` and `application.name` against these lists without
importing Keras; if Keras is upgraded, regenerate with ``python -m dlcli.recipe.keras_names``.
"""

from __future__ import annotations

import inspect

import keras

from dlcli.recipe import keras_names


def _layer_classes() -> set[str]:
    return {
        name for name, obj in vars(keras.layers).items()
        if inspect.isclass(obj) and issubclass(obj, keras.layers.Layer)
    }


def _application_models() -> set[str]:
    # a model constructor takes include_top and weights (modules such as `mobilenet` do not)
    out = set()
    for name, obj in vars(keras.applications).items():
        if callable(obj) and not inspect.ismodule(obj):
            params = inspect.signature(obj).parameters
            if {"include_top", "weights", "input_shape"} <= set(params):
                out.add(name)
    return out


def test_keras_layers_list_matches_installed_keras():
    installed = _layer_classes()
    assert "Dense" in installed and "LSTM" in installed
    assert set(keras_names.KERAS_LAYERS) == installed, (
        f"keras {keras.__version__} vs list from {keras_names.KERAS_VERSION}: "
        f"missing {sorted(installed - keras_names.KERAS_LAYERS)}, extra {sorted(keras_names.KERAS_LAYERS - installed)}"
    )


def test_keras_applications_list_matches_installed_keras():
    installed = _application_models()
    assert {"MobileNet", "MobileNetV3Small", "ResNet50"} <= installed
    assert set(keras_names.KERAS_APPLICATIONS) == installed, (
        f"missing {sorted(installed - keras_names.KERAS_APPLICATIONS)}, "
        f"extra {sorted(keras_names.KERAS_APPLICATIONS - installed)}"
    )


def test_every_listed_name_resolves():
    for name in keras_names.KERAS_LAYERS:
        assert issubclass(getattr(keras.layers, name), keras.layers.Layer), name
    for name in keras_names.KERAS_APPLICATIONS:
        assert callable(getattr(keras.applications, name)), name
    assert keras_names.KERAS_VERSION == keras.__version__

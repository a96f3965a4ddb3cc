"""``export.include_preprocessing``: the run's fitted reshape and normalization baked into
the exported model, so a device feeds raw feature values (decoded pixels at the recipe's
image size, CSV numbers) instead of normalizing them itself.

The wrapper is ``raw inputs -> Reshape -> fitted normalization -> the trained model``;
inputs keep their names.
Token and category ids are passed through (nothing to bake). Resizing images and turning
text into token ids stay outside the model.
"""

from __future__ import annotations

import numpy as np


def _fitted_layer():
    import keras

    class FittedNormalization(keras.layers.Layer):
        """``(x - a) / b`` (standard, minmax) or ``x * a + b`` (rescale), with the fitted
        values held as non-trainable weights: converters freeze weights into the graph
        (Keras's own Normalization keeps them as captured tensors, which tf2onnx turns
        into extra ONNX inputs)."""

        def __init__(self, method: str, a, b, **kwargs):
            super().__init__(**kwargs)
            self.method = method
            self.a_value, self.b_value = np.asarray(a, np.float32), np.asarray(b, np.float32)

        def build(self, input_shape):
            self.a = self.add_weight(shape=self.a_value.shape, initializer=keras.initializers.Constant(self.a_value),
                                     trainable=False, name="a")
            self.b = self.add_weight(shape=self.b_value.shape, initializer=keras.initializers.Constant(self.b_value),
                                     trainable=False, name="b")

        def call(self, x):
            return x * self.a + self.b if self.method == "rescale" else (x - self.a) / self.b

    return FittedNormalization


def _prepare(part, t, name: str):
    """The Keras layers for one input's reshape and normalization (the same float32
    arithmetic as ``Preprocessor.normalize_array``)."""
    import keras

    if part.input_dtype == "int32":
        return t
    if part.reshape:
        t = keras.layers.Reshape(tuple(part.input_shape), name=f"{name}_reshape")(t)
    n = part.normalize
    values = {"standard": ("mean", "std"), "minmax": ("min", "range"), "rescale": ("scale", "offset")}
    if n["method"] not in values:
        return t
    a, b = (n[k] for k in values[n["method"]])
    return _fitted_layer()(n["method"], a, b, name=f"{name}_normalization")(t)


def with_preprocessing(model, pre, x_raw):
    """``model`` behind the run's preprocessing; ``x_raw`` (featurized, not normalized)
    gives each raw input's shape."""
    import keras

    names = [t.name.split(":")[0] for t in model.inputs]
    if isinstance(x_raw, dict):
        inputs = {n: keras.Input(x_raw[n].shape[1:], dtype=str(x_raw[n].dtype), name=n) for n in names}
        prepared = {n: _prepare(pre.parts[n], inputs[n], n) for n in names}
        return keras.Model(inputs, model(prepared), name=f"{model.name}_with_preprocessing")
    inp = keras.Input(x_raw.shape[1:], dtype=str(x_raw.dtype), name=names[0])
    return keras.Model(inp, model(_prepare(pre, inp, names[0])), name=f"{model.name}_with_preprocessing")

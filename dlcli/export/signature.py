"""Input signatures for export: the model's input spec with a chosen batch dimension."""

from __future__ import annotations


def has_recurrent_layers(model) -> bool:
    import keras

    def walk(layer):
        if isinstance(layer, (keras.layers.RNN, keras.layers.Bidirectional)):
            return True
        return any(walk(sub) for sub in getattr(layer, "_layers", []) or [])

    return any(walk(layer) for layer in model._flatten_layers(include_self=False))


def input_signature(model, batch: int | None):
    import tensorflow as tf

    specs = [tf.TensorSpec((batch, *t.shape[1:]), t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    return specs if len(specs) > 1 else [specs[0]]

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
    """``[spec]`` for one input; ``[{name: spec}]`` for several, so exported functions take
    a dict of named inputs and every signature names each input."""
    import tensorflow as tf

    specs = [tf.TensorSpec((batch, *t.shape[1:]), t.dtype, name=t.name.split(":")[0]) for t in model.inputs]
    return [{s.name: s for s in specs}] if len(specs) > 1 else [specs[0]]


def match_inputs(x, names: list[str]) -> list:
    """The arrays of ``x`` (an array, or a dict by input name) in the order of a runtime's
    input ``names`` (which may carry prefixes and ``:0`` suffixes added by converters)."""
    if not isinstance(x, dict):
        return [x]
    out = []
    for name in names:
        bare = name.split(":")[0]
        key = bare if bare in x else next((k for k in sorted(x, key=len, reverse=True)
                                           if bare.endswith((f"_{k}", f"/{k}"))), None)
        if key is None:
            raise ValueError(f"runtime input {name!r} matches none of the model's inputs ({', '.join(x)})")
        out.append(x[key])
    return out


_RECURRENT = ("LSTM", "GRU", "SimpleRNN")


def unrolled_copy(model):
    """The same model (same weights) with every LSTM / GRU / SimpleRNN unrolled.

    The int8 TFLite converter crashes (SIGSEGV, TF 2.21) on the fused recurrent kernels
    it makes at a fixed batch; unrolled, a recurrent layer becomes builtin
    FULLY_CONNECTED / TANH / LOGISTIC ops that quantize cleanly. Needs a fixed
    sequence length (dlcli's inputs have one).
    """

    def walk(node):
        if isinstance(node, dict):
            if node.get("class_name") in _RECURRENT and isinstance(node.get("config"), dict):
                node["config"]["unroll"] = True
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    config = model.get_config()
    walk(config)
    import dlcli.models.custom_layers  # noqa: F401

    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy

"""Multi-layer perceptron."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dlcli.models.common import ArchCommon, activation_layer, dense_head, norm_layer, regularizer
from dlcli.models.registry import register_architecture
from dlcli.recipe.base import Width


class MLPParams(ArchCommon):
    architecture: Literal["mlp"]
    units: list[Width] = Field([64, 32], min_length=1, description="Hidden layer widths.")
    embedding_dim: int = Field(8, ge=1, description="Several inputs (data.inputs): width of the embedding of "
                               "each categorical column and of a text input's tokens.")


def _named_inputs(p: MLPParams, ctx):
    """Several inputs: numeric ones flattened, each categorical column embedded, text token
    embeddings averaged; all concatenated."""
    import keras

    inputs, parts = {}, []
    for info in ctx.inputs:
        t = inputs[info.name] = keras.Input(shape=info.shape, dtype=info.dtype, name=info.name)
        if info.kind == "categorical":
            e = keras.layers.Embedding(info.vocab_size, p.embedding_dim, name=f"{info.name}_embedding")(t)
            parts.append(keras.layers.Flatten(name=f"{info.name}_flat")(e))
        elif info.kind == "text":
            e = keras.layers.Embedding(info.vocab_size, p.embedding_dim, name=f"{info.name}_embedding")(t)
            parts.append(keras.layers.GlobalAveragePooling1D(name=f"{info.name}_mean")(e))
        else:
            parts.append(keras.layers.Flatten(name=f"{info.name}_flat")(t) if len(info.shape) > 1 else t)
    x = keras.layers.Concatenate(name="features")(parts) if len(parts) > 1 else parts[0]
    return inputs, x


@register_architecture("mlp", MLPParams, "Dense layers with activation, normalization and dropout.")
def build_mlp(p: MLPParams, ctx):
    import keras

    if ctx.inputs:
        inputs, x = _named_inputs(p, ctx)
    else:
        inputs = keras.Input(shape=ctx.input_shape, name="inputs")
        x = keras.layers.Flatten()(inputs) if len(ctx.input_shape) > 1 else inputs
    for i, units in enumerate(p.units):
        x = keras.layers.Dense(units, kernel_regularizer=regularizer(p.regularization), name=f"dense_{i}")(x)
        if (n := norm_layer(p.normalization, f"norm_{i}")) is not None:
            x = n(x)
        x = activation_layer(p.activation, f"act_{i}")(x)
        if p.dropout:
            x = keras.layers.Dropout(p.dropout, seed=ctx.seed + i, name=f"dropout_{i}")(x)
    return keras.Model(inputs, dense_head(x, ctx, p), name="mlp")

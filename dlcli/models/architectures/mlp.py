"""Multi-layer perceptron."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dlcli.models.common import ArchCommon, activation_layer, dense_head, norm_layer, regularizer
from dlcli.models.registry import register_architecture


class MLPParams(ArchCommon):
    architecture: Literal["mlp"]
    units: list[int] = Field([64, 32], min_length=1, description="Hidden layer widths.")


@register_architecture("mlp", MLPParams, "Dense layers with activation, normalization and dropout.")
def build_mlp(p: MLPParams, ctx):
    import keras

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

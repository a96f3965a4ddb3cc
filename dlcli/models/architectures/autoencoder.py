"""Autoencoder (dense or convolutional); trained to reconstruct its input."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from dlcli.errors import ModelError
from dlcli.models.common import ArchCommon, activation_layer, norm_layer
from dlcli.models.registry import register_architecture
from dlcli.recipe.base import Width


class AutoencoderParams(ArchCommon):
    architecture: Literal["autoencoder"]
    kind: Literal["dense", "conv"] = Field("dense", description="Dense or convolutional encoder/decoder.")
    units: list[Width] = Field([64], description="Dense encoder widths (decoder mirrors them).")
    filters: list[Width] = Field([16, 32], description="Conv encoder filters, each block halves the size.")
    latent_dim: int = Field(16, ge=1, description="Size of the code (dense kind).")
    output_activation: str = Field("linear", description="Reconstruction activation (sigmoid for data in [0,1]).")


@register_architecture("autoencoder", AutoencoderParams, "Dense or convolutional encoder/decoder.")
def build_autoencoder(p: AutoencoderParams, ctx):
    import keras

    if ctx.task != "reconstruction":
        raise ModelError("model.architecture autoencoder needs `task: reconstruction`")
    inputs = keras.Input(shape=ctx.input_shape, name="inputs")
    if p.kind == "dense":
        size = math.prod(ctx.input_shape)
        x = keras.layers.Flatten()(inputs) if len(ctx.input_shape) > 1 else inputs
        for i, u in enumerate(p.units):
            x = activation_layer(p.activation, f"enc_act_{i}")(keras.layers.Dense(u, name=f"enc_{i}")(x))
        x = keras.layers.Dense(p.latent_dim, name="code")(x)
        for i, u in enumerate(reversed(p.units)):
            x = activation_layer(p.activation, f"dec_act_{i}")(keras.layers.Dense(u, name=f"dec_{i}")(x))
        x = keras.layers.Dense(size, name="reconstruction")(x)
        x = keras.layers.Reshape(ctx.input_shape)(x) if len(ctx.input_shape) > 1 else x
    else:
        if len(ctx.input_shape) != 3:
            raise ModelError(
                f"model: a conv autoencoder needs (height, width, channels) inputs; the data has shape "
                f"{tuple(ctx.input_shape)} (set data.reshape)"
            )
        h, w, c = ctx.input_shape
        f = 2 ** len(p.filters)
        if h % f or w % f:
            raise ModelError(
                f"model: a conv autoencoder with {len(p.filters)} blocks needs height and width divisible "
                f"by {f}; the data has shape {tuple(ctx.input_shape)}"
            )
        x = inputs
        for i, n in enumerate(p.filters):
            x = keras.layers.Conv2D(n, 3, strides=2, padding="same", name=f"enc_{i}")(x)
            if (nl := norm_layer(p.normalization, f"enc_norm_{i}")) is not None:
                x = nl(x)
            x = activation_layer(p.activation, f"enc_act_{i}")(x)
        for i, n in enumerate(reversed(p.filters)):
            x = keras.layers.Conv2DTranspose(n, 3, strides=2, padding="same", name=f"dec_{i}")(x)
            x = activation_layer(p.activation, f"dec_act_{i}")(x)
        x = keras.layers.Conv2D(c, 3, padding="same", name="reconstruction")(x)
    x = keras.layers.Activation(p.output_activation, dtype="float32", name="output")(x)
    return keras.Model(inputs, x, name=f"{p.kind}_autoencoder")

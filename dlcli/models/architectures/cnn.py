"""Convolutional network: conv blocks with batch norm, pooling and dropout."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dlcli.errors import ModelError
from dlcli.models.common import ArchCommon, activation_layer, dense_head, norm_layer, regularizer
from dlcli.models.registry import register_architecture
from dlcli.recipe.base import Width


class CNNParams(ArchCommon):
    architecture: Literal["cnn"]
    filters: list[Width] = Field([32, 64], min_length=1, description="Filters of each conv block.")
    kernel_size: int = Field(3, ge=1, description="Convolution kernel size.")
    convs_per_block: int = Field(1, ge=1, description="Convolutions per block.")
    pooling: Literal["max", "avg", "none"] = Field("max", description="Pooling after each block.")
    normalization: Literal["none", "batch", "layer"] = Field("batch", description="Normalization after each convolution.")
    global_pooling: Literal["avg", "max", "flatten"] = Field("avg", description="How feature maps become a vector.")
    dense: list[Width] = Field([], description="Dense layers before the head.")


@register_architecture("cnn", CNNParams, "Conv blocks (1D or 2D by input rank) with norm, pooling, dropout.")
def build_cnn(p: CNNParams, ctx):
    import keras

    rank = len(ctx.input_shape)
    if rank not in (2, 3):
        raise ModelError(
            f"model.architecture cnn needs inputs of rank 2 (steps, channels) or 3 (height, width, "
            f"channels); the data has shape {tuple(ctx.input_shape)} (set data.reshape, e.g. [8, 8, 1])"
        )
    conv = keras.layers.Conv2D if rank == 3 else keras.layers.Conv1D
    pool = {"max": keras.layers.MaxPooling2D, "avg": keras.layers.AveragePooling2D}
    if rank == 2:
        pool = {"max": keras.layers.MaxPooling1D, "avg": keras.layers.AveragePooling1D}
    inputs = keras.Input(shape=ctx.input_shape, name="inputs")
    x = inputs
    for b, f in enumerate(p.filters):
        for c in range(p.convs_per_block):
            x = conv(f, p.kernel_size, padding="same", use_bias=p.normalization == "none",
                     kernel_regularizer=regularizer(p.regularization), name=f"conv_{b}_{c}")(x)
            if (n := norm_layer(p.normalization, f"norm_{b}_{c}")) is not None:
                x = n(x)
            x = activation_layer(p.activation, f"act_{b}_{c}")(x)
        spatial = x.shape[1:-1]
        if p.pooling != "none" and all(s is None or s >= 2 for s in spatial):
            x = pool[p.pooling](2, name=f"pool_{b}")(x)
        if p.dropout:
            x = keras.layers.Dropout(p.dropout, seed=ctx.seed + b, name=f"dropout_{b}")(x)
    if p.global_pooling == "flatten":
        x = keras.layers.Flatten()(x)
    elif rank == 3:
        x = (keras.layers.GlobalAveragePooling2D if p.global_pooling == "avg" else keras.layers.GlobalMaxPooling2D)()(x)
    else:
        x = (keras.layers.GlobalAveragePooling1D if p.global_pooling == "avg" else keras.layers.GlobalMaxPooling1D)()(x)
    for i, units in enumerate(p.dense):
        x = keras.layers.Dense(units, kernel_regularizer=regularizer(p.regularization), name=f"dense_{i}")(x)
        x = activation_layer(p.activation, f"dense_act_{i}")(x)
        if p.dropout:
            x = keras.layers.Dropout(p.dropout, seed=ctx.seed + 100 + i, name=f"dense_dropout_{i}")(x)
    return keras.Model(inputs, dense_head(x, ctx, p), name="cnn")

"""Pieces shared by the built-in architectures (Keras imported lazily)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dlcli.recipe.base import StrictModel


class Regularization(StrictModel):
    """L1 / L2 weight penalties on kernels."""

    l1: float = Field(0.0, ge=0.0, description="L1 penalty.")
    l2: float = Field(0.0, ge=0.0, description="L2 penalty (weight decay in the loss).")


class ArchCommon(StrictModel):
    activation: str = Field("relu", description="Hidden activation: relu, leaky_relu, elu, selu, gelu, silu, swish, tanh, sigmoid, ...")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout rate.")
    normalization: Literal["none", "batch", "layer"] = Field("none", description="Normalization after hidden layers.")
    regularization: Regularization = Field(default_factory=Regularization, description="Kernel L1/L2 penalties.")
    output_activation: str = Field("auto", description="auto: softmax for classification, linear otherwise.")
    input_shape: list[int | None] | None = Field(None, description="Input shape without batch axis; default: from the data.")


def regularizer(reg: Regularization):
    import keras

    if not reg.l1 and not reg.l2:
        return None
    return keras.regularizers.L1L2(l1=reg.l1, l2=reg.l2)


def norm_layer(kind: str, name: str | None = None):
    import keras

    if kind == "batch":
        return keras.layers.BatchNormalization(momentum=0.9, name=name)
    if kind == "layer":
        return keras.layers.LayerNormalization(name=name)
    return None


def activation_layer(name: str, layer_name: str | None = None):
    import keras

    return keras.layers.Activation(name, name=layer_name)


def dense_head(x, ctx, params, name: str = "head"):
    """The output layer: classes, regression targets, reshaped to the target shape."""
    import keras

    x = keras.layers.Dense(ctx.num_outputs, name=name)(x)
    act = ctx.head_activation(params.output_activation)
    x = keras.layers.Activation(act, dtype="float32", name=f"{name}_{act}")(x)
    if ctx.task == "regression" and len(ctx.output_shape) > 1:
        x = keras.layers.Reshape(ctx.output_shape)(x)
    return x

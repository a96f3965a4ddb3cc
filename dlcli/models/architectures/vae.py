"""Variational autoencoder (dense or convolutional): an encoder to a latent Gaussian, a
decoder back. Trained on reconstruction plus ``kl_weight`` times the KL divergence of the
latent to N(0, I); the saved model reconstructs through the latent mean, and its nested
``decoder`` model turns standard normal draws into new examples."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field

from dlcli.errors import ModelError
from dlcli.models.architectures.autoencoder import AutoencoderParams
from dlcli.models.common import activation_layer
from dlcli.models.registry import register_architecture
from dlcli.recipe.base import Width


class VaeParams(AutoencoderParams):
    architecture: Literal["vae"]  # type: ignore[assignment]
    units: list[Width] = Field([128], description="Dense encoder widths (decoder mirrors them).")
    latent_dim: int = Field(8, ge=1, description="Size of the latent Gaussian.")
    kl_weight: float = Field(1.0, ge=0, description="Weight of the KL term (beta; 0: a plain autoencoder).")


def _encoder_body(p: VaeParams, x, shape):
    import keras

    if p.kind == "dense":
        x = keras.layers.Flatten()(x) if len(shape) > 1 else x
        for i, u in enumerate(p.units):
            x = activation_layer(p.activation, f"enc_act_{i}")(keras.layers.Dense(u, name=f"enc_{i}")(x))
        return x
    for i, n in enumerate(p.filters):
        x = keras.layers.Conv2D(n, 3, strides=2, padding="same", name=f"enc_{i}")(x)
        x = activation_layer(p.activation, f"enc_act_{i}")(x)
    return keras.layers.Flatten()(x)


def _decoder(p: VaeParams, shape):
    import keras

    z = keras.Input((p.latent_dim,), name="latent")
    if p.kind == "dense":
        x = z
        for i, u in enumerate(reversed(p.units)):
            x = activation_layer(p.activation, f"dec_act_{i}")(keras.layers.Dense(u, name=f"dec_{i}")(x))
        x = keras.layers.Dense(math.prod(shape), name="reconstruction")(x)
        x = keras.layers.Reshape(shape)(x) if len(shape) > 1 else x
    else:
        f = 2 ** len(p.filters)
        h, w, c = shape
        x = keras.layers.Dense((h // f) * (w // f) * p.filters[-1], name="dec_dense")(z)
        x = activation_layer(p.activation, "dec_dense_act")(x)
        x = keras.layers.Reshape((h // f, w // f, p.filters[-1]))(x)
        for i, n in enumerate(reversed(p.filters)):
            x = keras.layers.Conv2DTranspose(n, 3, strides=2, padding="same", name=f"dec_{i}")(x)
            x = activation_layer(p.activation, f"dec_act_{i}")(x)
        x = keras.layers.Conv2D(c, 3, padding="same", name="reconstruction")(x)
    x = keras.layers.Activation(p.output_activation, dtype="float32", name="output")(x)
    return keras.Model(z, x, name="decoder")


def _check_conv(p: VaeParams, shape) -> None:
    if p.kind != "conv":
        return
    if len(shape) != 3:
        raise ModelError(f"model: a conv VAE needs (height, width, channels) inputs; the data has shape {tuple(shape)} "
                         "(set data.reshape)")
    f = 2 ** len(p.filters)
    if shape[0] % f or shape[1] % f:
        raise ModelError(f"model: a conv VAE with {len(p.filters)} blocks needs height and width divisible by {f}; "
                         f"the data has shape {tuple(shape)}")


@register_architecture("vae", VaeParams, "Variational autoencoder: latent Gaussian, KL-weighted; samples from its decoder.")
def build_vae(p: VaeParams, ctx):
    import keras

    from dlcli.models.custom_layers import VaeSampling

    if ctx.task != "reconstruction":
        raise ModelError("model.architecture vae needs `task: reconstruction`")
    shape = tuple(ctx.input_shape)
    _check_conv(p, shape)
    inputs = keras.Input(shape=shape, name="inputs")
    h = _encoder_body(p, inputs, shape)
    mean = keras.layers.Dense(p.latent_dim, name="z_mean")(h)
    log_var = keras.layers.Dense(p.latent_dim, name="z_log_var")(h)
    z = VaeSampling(p.kl_weight, math.prod(shape), seed=ctx.seed, name="vae_sampling")([mean, log_var])
    return keras.Model(inputs, _decoder(p, shape)(z), name=f"{p.kind}_vae")

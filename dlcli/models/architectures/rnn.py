"""Recurrent network: LSTM / GRU / SimpleRNN, optionally bidirectional."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from dlcli.errors import ModelError
from dlcli.models.common import ArchCommon, activation_layer, dense_head, regularizer
from dlcli.models.registry import register_architecture
from dlcli.recipe.base import Width


class RNNParams(ArchCommon):
    architecture: Literal["rnn"]
    cell: Literal["lstm", "gru", "simple"] = Field("lstm", description="Recurrent cell.")
    units: list[Width] = Field([32], min_length=1, description="Units of each stacked recurrent layer.")
    bidirectional: bool = Field(False, description="Wrap each recurrent layer in Bidirectional.")
    embedding_dim: int = Field(32, ge=1, description="Embedding size when inputs are token ids.")
    recurrent_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on recurrent state.")
    dense: list[Width] = Field([], description="Dense layers before the head.")
    unroll: bool = Field(False, description="Unroll the loop (short sequences; friendlier to TFLite).")


@register_architecture("rnn", RNNParams, "Stacked LSTM/GRU/SimpleRNN over token embeddings or feature sequences.")
def build_rnn(p: RNNParams, ctx):
    import keras

    cell = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU, "simple": keras.layers.SimpleRNN}[p.cell]
    tokens = ctx.input_dtype.startswith("int")
    if tokens and len(ctx.input_shape) != 1:
        raise ModelError(f"model.architecture rnn: token inputs must be (steps,), got {ctx.input_shape}")
    if not tokens and len(ctx.input_shape) != 2:
        raise ModelError(
            f"model.architecture rnn needs sequences of shape (steps, features) or token ids; "
            f"the data has shape {tuple(ctx.input_shape)} (set data.reshape, e.g. [8, 8])"
        )
    inputs = keras.Input(shape=ctx.input_shape, dtype=ctx.input_dtype, name="inputs")
    x = inputs
    if tokens:
        x = keras.layers.Embedding(ctx.vocab_size, p.embedding_dim, name="embedding")(x)
    for i, units in enumerate(p.units):
        last = i == len(p.units) - 1
        layer = cell(units, return_sequences=not last, dropout=p.dropout,
                     recurrent_dropout=p.recurrent_dropout, unroll=p.unroll, seed=ctx.seed + i,
                     kernel_regularizer=regularizer(p.regularization), name=f"{p.cell}_{i}")
        x = keras.layers.Bidirectional(layer, name=f"bi_{p.cell}_{i}")(x) if p.bidirectional else layer(x)
    for i, units in enumerate(p.dense):
        x = keras.layers.Dense(units, name=f"dense_{i}")(x)
        x = activation_layer(p.activation, f"dense_act_{i}")(x)
    return keras.Model(inputs, dense_head(x, ctx, p), name="rnn")

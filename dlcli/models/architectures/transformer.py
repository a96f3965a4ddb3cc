"""Transformer encoder for sequence or text classification / regression."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from dlcli.errors import ModelError
from dlcli.models.common import ArchCommon, dense_head
from dlcli.models.registry import register_architecture


class TransformerParams(ArchCommon):
    architecture: Literal["transformer"]
    embed_dim: int = Field(32, ge=2, description="Model width (token embedding or feature projection).")
    num_heads: int = Field(2, ge=1, description="Attention heads (embed_dim must be divisible by it).")
    ff_dim: int = Field(64, ge=1, description="Hidden width of each block's feed-forward network.")
    num_blocks: int = Field(2, ge=1, description="Encoder blocks.")
    activation: str = Field("gelu", description="Feed-forward activation.")
    pooling: Literal["avg", "max"] = Field("avg", description="How the sequence becomes one vector.")

    @model_validator(mode="after")
    def _heads(self):
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})")
        return self


@register_architecture("transformer", TransformerParams, "Encoder blocks with multi-head self-attention.")
def build_transformer(p: TransformerParams, ctx):
    import keras

    from dlcli.models.custom_layers import PositionEmbedding

    tokens = ctx.input_dtype.startswith("int")
    if (tokens and len(ctx.input_shape) != 1) or (not tokens and len(ctx.input_shape) != 2):
        raise ModelError(
            f"model.architecture transformer needs token ids (steps,) or sequences (steps, features); "
            f"the data has shape {tuple(ctx.input_shape)} (set data.reshape, e.g. [8, 8])"
        )
    steps = ctx.input_shape[0]
    inputs = keras.Input(shape=ctx.input_shape, dtype=ctx.input_dtype, name="inputs")
    if tokens:
        x = keras.layers.Embedding(ctx.vocab_size, p.embed_dim, name="token_embedding")(inputs)
    else:
        x = keras.layers.Dense(p.embed_dim, name="projection")(inputs)
    x = PositionEmbedding(steps, name="position_embedding")(x)
    for b in range(p.num_blocks):
        attn = keras.layers.MultiHeadAttention(
            p.num_heads, p.embed_dim // p.num_heads, dropout=p.dropout, seed=ctx.seed + b, name=f"attention_{b}"
        )(x, x)
        if p.dropout:
            attn = keras.layers.Dropout(p.dropout, seed=ctx.seed + 50 + b)(attn)
        x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"ln_attn_{b}")(keras.layers.Add()([x, attn]))
        ff = keras.layers.Dense(p.ff_dim, activation=p.activation, name=f"ff1_{b}")(x)
        ff = keras.layers.Dense(p.embed_dim, name=f"ff2_{b}")(ff)
        if p.dropout:
            ff = keras.layers.Dropout(p.dropout, seed=ctx.seed + 100 + b)(ff)
        x = keras.layers.LayerNormalization(epsilon=1e-6, name=f"ln_ff_{b}")(keras.layers.Add()([x, ff]))
    pool = keras.layers.GlobalAveragePooling1D if p.pooling == "avg" else keras.layers.GlobalMaxPooling1D
    x = pool(name="pool")(x)
    if p.dropout:
        x = keras.layers.Dropout(p.dropout, seed=ctx.seed + 200)(x)
    return keras.Model(inputs, dense_head(x, ctx, p), name="transformer")

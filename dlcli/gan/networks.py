"""The generator and the discriminator of a ``model: gan`` recipe, built from the recipe's
two network descriptions with the ordinary builders, wrapped with named inputs:

* generator: ``latent`` (latent_dim floats) [+ ``label`` (1 int32 class id)] -> an example
  of the data's shape. Conditional: the label's learned embedding is concatenated to the
  latent vector, so the recipe's network sees ``latent_dim + label_embedding`` values.
* discriminator: ``example`` [+ ``label``] -> one score (a logit). Conditional: the label's
  embedding, one value per input element, is appended as an extra channel (last axis).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

from dlcli.errors import DataError, ModelError, ShapeMismatchError
from dlcli.models.context import BuildContext


def _body(spec, ctx: BuildContext, allow_code: bool, where: str):
    """The recipe's network for ``ctx`` (its own input), errors naming ``where``."""
    from dlcli.models.builder import build_model

    try:
        return build_model(SimpleNamespace(model=spec), ctx, allow_code=allow_code)
    except (ModelError, ShapeMismatchError) as exc:
        raise type(exc)(f"{where}: {exc}") from exc


def _ctx(shape: tuple, seed: int, out_shape: tuple) -> BuildContext:
    return BuildContext(input_shape=tuple(shape), input_dtype="float32", task="generation",
                        num_outputs=int(math.prod(out_shape)), output_shape=tuple(out_shape), seed=seed)


def check_conditional(spec, num_classes: int) -> None:
    if spec.conditional and num_classes < 2:
        raise DataError("model.gan.conditional: a conditional GAN needs labelled data with at least 2 classes "
                        f"(data.label_column; the data has {num_classes})")


def build_generator(spec, example_shape: tuple, num_classes: int, seed: int, allow_code: bool = False):
    import keras

    z = keras.Input((spec.latent_dim,), name="latent")
    inputs, x = [z], z
    if spec.conditional:
        label = keras.Input((1,), dtype="int32", name="label")
        emb = keras.layers.Embedding(num_classes, spec.label_embedding, name="label_embedding")(label)
        x = keras.layers.Concatenate(name="latent_and_label")([z, keras.layers.Flatten()(emb)])
        inputs.append(label)
    width = spec.latent_dim + (spec.label_embedding if spec.conditional else 0)
    # the builders check the body's output against output_shape: the data's examples
    body = _body(spec.generator, _ctx((width,), seed, example_shape), allow_code, "model.gan.generator")
    return keras.Model(inputs if spec.conditional else z, body(x), name="generator")


def build_discriminator(spec, example_shape: tuple, num_classes: int, seed: int, allow_code: bool = False):
    import keras

    example = keras.Input(tuple(example_shape), name="example")
    inputs, x, shape = [example], example, tuple(example_shape)
    if spec.conditional:
        label = keras.Input((1,), dtype="int32", name="label")
        size = int(math.prod(example_shape[:-1])) if len(example_shape) > 1 else 1
        emb = keras.layers.Embedding(num_classes, size, name="label_map")(label)
        label_map = keras.layers.Reshape((*example_shape[:-1], 1) if len(example_shape) > 1 else (1,))(emb)
        x = keras.layers.Concatenate(name="example_and_label")([example, label_map])
        shape = (*example_shape[:-1], example_shape[-1] + 1)
        inputs.append(label)
    body = _body(spec.discriminator, _ctx(shape, seed, (1,)), allow_code, "model.gan.discriminator")
    return keras.Model(inputs if spec.conditional else example, body(x), name="discriminator")

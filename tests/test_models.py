"""dlcli.models: architectures, layers / graph / application / code models, shape checks.

Models are tiny (a few hundred parameters, one MobileNet alpha=0.25 at 32x32) and run on
random batches; nothing is downloaded.
"""

from __future__ import annotations

import math
import textwrap

import keras
import numpy as np
import pytest

from dlcli.data import load_data
from dlcli.errors import DataError, ModelError, RecipeError, ShapeMismatchError
from dlcli.models import build_model, check_model_fits_data, context_from_data
from dlcli.models.context import BuildContext, InputInfo
from dlcli.models.custom_layers import PositionEmbedding
from dlcli.models.registry import architectures, get_architecture, register_architecture
from dlcli.recipe.loader import load_recipe, recipe_from_text


def make_recipe(tmp_path, model: str, task: str = "classification", data: str = "source: synthetic"):
    text = (
        f"name: t\nseed: 5\ntask: {task}\ndata:\n" + textwrap.indent(textwrap.dedent(data).strip("\n"), "  ")
        + "\nmodel:\n" + textwrap.indent(textwrap.dedent(model).strip("\n"), "  ") + "\n"
    )
    return recipe_from_text(text, file="x.yaml", base_dir=tmp_path)


def ctx_for(shape, task="classification", outputs=3, dtype="float32", vocab=None, out_shape=()):
    return BuildContext(tuple(shape), dtype, task, outputs, tuple(out_shape), vocab, seed=1)


def batch(ctx: BuildContext, n: int = 2):
    rng = np.random.default_rng(0)
    if ctx.input_dtype == "int32":
        return rng.integers(0, ctx.vocab_size, (n, *ctx.input_shape)).astype(np.int32)
    return rng.normal(size=(n, *ctx.input_shape)).astype(np.float32)


# ---------------------------------------------------------------- architectures
CLS = "classification"
ARCH_CASES = [
    ("mlp-1d", "architecture: mlp\nunits: [8, 4]\ndropout: 0.1\nnormalization: batch", ctx_for((6,)), (3,)),
    ("mlp-2d", "architecture: mlp\nunits: [4]\nnormalization: layer", ctx_for((3, 2)), (3,)),
    ("mlp-regression", "architecture: mlp\nunits: [4]", ctx_for((5,), "regression", 1), (1,)),
    ("mlp-regression-2d-target", "architecture: mlp\nunits: [4]",
     ctx_for((5,), "regression", 6, out_shape=(2, 3)), (2, 3)),
    ("cnn-1d", "architecture: cnn\nfilters: [4, 4]\ndropout: 0.1", ctx_for((8, 2)), (3,)),
    ("cnn-2d", "architecture: cnn\nfilters: [4]\nconvs_per_block: 2\ndense: [4]", ctx_for((8, 8, 1)), (3,)),
    ("cnn-2d-flatten", "architecture: cnn\nfilters: [2]\npooling: avg\nglobal_pooling: flatten\nnormalization: none",
     ctx_for((4, 4, 3)), (3,)),
    *[
        (f"rnn-{cell}{'-bi' if bi else ''}-float", f"architecture: rnn\ncell: {cell}\nunits: [4, 3]\nbidirectional: {bi}",
         ctx_for((5, 3)), (3,))
        for cell in ("lstm", "gru", "simple") for bi in (False, True)
    ],
    *[
        (f"rnn-{cell}-bi-tokens", f"architecture: rnn\ncell: {cell}\nunits: [4]\nembedding_dim: 4\nbidirectional: true",
         ctx_for((6,), dtype="int32", vocab=20), (3,))
        for cell in ("lstm", "gru", "simple")
    ],
    ("rnn-unroll-dense", "architecture: rnn\nunits: [3]\nunroll: true\ndense: [4]", ctx_for((4, 2)), (3,)),
    ("transformer-tokens", "architecture: transformer\nembed_dim: 8\nnum_heads: 2\nff_dim: 8\nnum_blocks: 1",
     ctx_for((7,), dtype="int32", vocab=30), (3,)),
    ("transformer-floats", ("architecture: transformer\nembed_dim: 4\nnum_heads: 1\nff_dim: 4\nnum_blocks: 2\n"
                            "dropout: 0.1\npooling: max"), ctx_for((5, 3), "regression", 1), (1,)),
    ("autoencoder-dense", "architecture: autoencoder\nunits: [4]\nlatent_dim: 2",
     ctx_for((6,), "reconstruction", 6), (6,)),
    ("autoencoder-dense-image", "architecture: autoencoder\nunits: [4]\nlatent_dim: 2",
     ctx_for((4, 4, 1), "reconstruction", 16), (4, 4, 1)),
    ("autoencoder-conv", "architecture: autoencoder\nkind: conv\nfilters: [2, 4]\nnormalization: batch",
     ctx_for((8, 8, 1), "reconstruction", 64), (8, 8, 1)),
]


@pytest.mark.parametrize("model, ctx, out", [c[1:] for c in ARCH_CASES], ids=[c[0] for c in ARCH_CASES])
def test_architecture_builds_and_predicts(tmp_path, model, ctx, out):
    model = build_model(make_recipe(tmp_path, model, task=ctx.task), ctx)
    assert isinstance(model, keras.Model)
    assert model.count_params() < 2000
    y = np.asarray(model(batch(ctx, 3), training=False))
    assert y.shape == (3, *out)
    assert np.all(np.isfinite(y))
    if ctx.task == CLS:  # softmax head
        np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-5)


FULL_OPTIONS = [
    ("architecture: mlp\nunits: [3, 3]\ndropout: 0.1\nnormalization: batch", ctx_for((4,))),
    ("architecture: cnn\nfilters: [2, 2]\ndense: [3, 3]\ndropout: 0.1\nconvs_per_block: 2", ctx_for((4, 4, 1))),
    ("architecture: cnn\nfilters: [2, 2]\ndense: [3, 3]\ndropout: 0.1\nglobal_pooling: max", ctx_for((6, 2))),
    ("architecture: rnn\nunits: [2, 2]\ndense: [3, 3]\ndropout: 0.1\nbidirectional: true", ctx_for((3, 2))),
    ("architecture: transformer\nembed_dim: 4\nnum_heads: 2\nff_dim: 4\nnum_blocks: 2\ndropout: 0.1",
     ctx_for((3,), dtype="int32", vocab=9)),
    ("architecture: autoencoder\nunits: [3, 2]\nlatent_dim: 2", ctx_for((2, 2, 1), "reconstruction", 4)),
    ("architecture: autoencoder\nkind: conv\nfilters: [2, 2]\nnormalization: layer",
     ctx_for((4, 4, 1), "reconstruction", 16)),
]


def test_architectures_with_every_option_build_repeatedly_in_one_session(tmp_path):
    """Layer names must not collide with Keras's automatic ones (dropout, dropout_1, ...)."""
    keras.backend.clear_session()
    for _ in range(2):
        for model, ctx in FULL_OPTIONS:
            m = build_model(make_recipe(tmp_path, model, task=ctx.task), ctx)
            names = [layer.name for layer in m.layers]
            assert len(names) == len(set(names)), model


def test_architecture_registry():
    assert set(architectures()) == {"mlp", "cnn", "rnn", "transformer", "autoencoder", "vae"}
    assert get_architecture("cnn").name == "cnn" and get_architecture("cnn").summary
    with pytest.raises(ModelError, match=r"unknown architecture 'mpl', did you mean 'mlp'\?.*known: autoencoder"):
        get_architecture("mpl")
    with pytest.raises(ValueError, match="registered twice"):
        register_architecture("mlp", object)(lambda p, ctx: None)
    assert architectures()["mlp"].params.__name__ == "MLPParams"


def test_architecture_shape_errors(tmp_path):
    with pytest.raises(ModelError, match=r"cnn needs inputs of rank 2.*\(6,\)"):
        build_model(make_recipe(tmp_path, "architecture: cnn"), ctx_for((6,)))
    with pytest.raises(ModelError, match=r"rnn needs sequences.*\(6,\)"):
        build_model(make_recipe(tmp_path, "architecture: rnn"), ctx_for((6,)))
    with pytest.raises(ModelError, match="divisible by 4"):
        build_model(make_recipe(tmp_path, "architecture: autoencoder\nkind: conv\nfilters: [2, 2]",
                                task="reconstruction"), ctx_for((6, 6, 1), "reconstruction", 36))
    with pytest.raises(RecipeError, match=r"embed_dim \(6\) must be divisible by num_heads \(4\)"):
        make_recipe(tmp_path, "architecture: transformer\nembed_dim: 6\nnum_heads: 4")
    with pytest.raises(RecipeError, match="autoencoder needs task: reconstruction"):
        make_recipe(tmp_path, "architecture: autoencoder")


def test_architecture_options_reach_the_layers(tmp_path):
    m = build_model(make_recipe(tmp_path, "architecture: mlp\nunits: [4]\nactivation: gelu\n"
                                          "regularization: {l2: 0.5}\ndropout: 0.25"), ctx_for((3,)))
    assert m.get_layer("act_0").activation is keras.activations.gelu
    assert m.get_layer("dropout_0").rate == 0.25
    w = m.get_layer("dense_0").kernel.numpy()
    np.testing.assert_allclose(float(sum(m.losses)), 0.5 * np.sum(w**2), rtol=1e-5)
    m = build_model(make_recipe(tmp_path, "architecture: mlp\nunits: [4]\noutput_activation: sigmoid"), ctx_for((3,)))
    assert m.layers[-1].activation is keras.activations.sigmoid


# ---------------------------------------------------------------- save / load in safe mode
def test_transformer_and_position_embedding_survive_keras_save(tmp_path):
    ctx = ctx_for((7,), dtype="int32", vocab=30)
    m = build_model(make_recipe(tmp_path, "architecture: transformer\nembed_dim: 8\nnum_heads: 2\nff_dim: 8\n"
                                          "num_blocks: 1"), ctx)
    pos = m.get_layer("position_embedding")
    assert isinstance(pos, PositionEmbedding) and tuple(pos.position.shape) == (7, 8)
    pos.position.assign(np.random.default_rng(1).normal(size=(7, 8)).astype(np.float32))
    x = batch(ctx, 4)
    m.save(tmp_path / "t.keras")
    loaded = keras.saving.load_model(tmp_path / "t.keras", safe_mode=True)
    assert isinstance(loaded.get_layer("position_embedding"), PositionEmbedding)
    np.testing.assert_array_equal(np.asarray(loaded(x)), np.asarray(m(x)))


def test_position_embedding_layer_alone(tmp_path):
    assert keras.saving.get_registered_name(PositionEmbedding) == "dlcli>PositionEmbedding"
    layer = PositionEmbedding(5, name="pe")
    x = np.random.default_rng(2).normal(size=(2, 3, 4)).astype(np.float32)  # shorter than sequence_length
    y = np.asarray(layer(x))
    np.testing.assert_allclose(y, x + layer.position.numpy()[None, :3, :], rtol=1e-6)
    inp = keras.Input((5, 4))
    m = keras.Model(inp, PositionEmbedding(5)(inp))
    m.save(tmp_path / "pe.keras")
    m2 = keras.saving.load_model(tmp_path / "pe.keras", safe_mode=True)
    x5 = np.random.default_rng(3).normal(size=(2, 5, 4)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(m2(x5)), np.asarray(m(x5)))
    assert m2.layers[-1].get_config()["sequence_length"] == 5


# ---------------------------------------------------------------- layers: and graph:
def _np_activation(name, z):
    from math import erf, sqrt

    sig = 1 / (1 + np.exp(-z))
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    return {
        "relu": np.maximum(z, 0),
        "leaky_relu": np.where(z > 0, z, 0.2 * z),
        "elu": np.where(z > 0, z, np.expm1(z)),
        "selu": scale * np.where(z > 0, z, alpha * np.expm1(z)),
        "gelu": 0.5 * z * (1 + np.vectorize(erf)(z / sqrt(2))),
        "silu": z * sig,
        "swish": z * sig,
        "sigmoid": sig,
        "tanh": np.tanh(z),
        "softmax": np.exp(z) / np.exp(z).sum(axis=-1, keepdims=True),
    }[name]


@pytest.mark.parametrize("act", ["relu", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "sigmoid", "tanh",
                                 "softmax"])
def test_layers_recipe_activations_by_name(tmp_path, act):
    m = build_model(make_recipe(tmp_path, f"""
        layers:
          - {{type: Dense, units: 3, activation: {act}, kernel_regularizer: {{l2: 0.01}}}}
    """), ctx_for((4,)))
    x = np.random.default_rng(4).normal(size=(5, 4)).astype(np.float32) * 2
    dense = m.layers[-1]
    z = x @ dense.kernel.numpy() + dense.bias.numpy()
    np.testing.assert_allclose(np.asarray(m(x)), _np_activation(act, z), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(float(sum(m.losses)), 0.01 * np.sum(dense.kernel.numpy() ** 2), rtol=1e-5)


def test_layers_recipe_sequential_stack(tmp_path):
    m = build_model(make_recipe(tmp_path, """
        layers:
          - {type: Reshape, target_shape: [4, 2]}
          - {type: Bidirectional, layer: {type: LSTM, units: 2}}
          - {type: Dense, units: 4, kernel_regularizer: {l1: 0.1, l2: 0.2}, bias_regularizer: l2}
          - {type: Dropout, rate: 0.5}
          - {type: Dense, units: 3, activation: softmax}
    """), ctx_for((8,)))
    assert [type(layer).__name__ for layer in m.layers[1:]] == ["Reshape", "Bidirectional", "Dense", "Dropout", "Dense"]
    reg = m.layers[3].kernel_regularizer
    assert isinstance(reg, keras.regularizers.L1L2) and math.isclose(reg.l1, 0.1) and math.isclose(reg.l2, 0.2)
    assert isinstance(m.layers[3].bias_regularizer, keras.regularizers.L2)
    assert np.asarray(m(batch(ctx_for((8,)), 2))).shape == (2, 3)


def test_layers_recipe_errors(tmp_path):
    with pytest.raises(RecipeError, match=r"model\.layers\.0\.type: unknown Keras layer type 'Dens', did you mean 'Dense'\?"):
        make_recipe(tmp_path, "layers:\n  - {type: Dens, units: 3}")
    # a wrapped layer is validated when built: the suggestion must survive
    with pytest.raises(ModelError, match=r"model\.layers\.0\.layer\.type: unknown Keras layer type 'LSTMM', did you mean 'LSTM'\?"):
        build_model(make_recipe(tmp_path, "layers:\n  - {type: Bidirectional, layer: {type: LSTMM, units: 2}}"),
                    ctx_for((4, 2)))
    with pytest.raises(ModelError, match=r"model\.layers\.0 \(Dense\): .*nits"):
        build_model(make_recipe(tmp_path, "layers:\n  - {type: Dense, unitz: 3}"), ctx_for((4,)))
    with pytest.raises(ModelError, match=r"model\.layers\.0: cannot apply Conv2D to input of shape \(None, 4\)"):
        build_model(make_recipe(tmp_path, "layers:\n  - {type: Conv2D, filters: 2, kernel_size: 3}"), ctx_for((4,)))


def test_graph_recipe_two_inputs_residual_and_shared_layer(tmp_path):
    recipe = make_recipe(tmp_path, """
        graph:
          inputs:
            - {name: left, shape: [4]}
            - {name: right, shape: [4]}
          nodes:
            - {name: enc_l, type: Dense, units: 4, activation: tanh, inputs: [left]}
            - {name: enc_r, share: enc_l, inputs: [right]}
            - {name: both, type: Add, inputs: [enc_l, enc_r]}
            - {name: residual, type: Add, inputs: [both, left]}
            - {name: out, type: Dense, units: 3, activation: softmax, inputs: [residual]}
          outputs: [out]
    """)
    two = [InputInfo(n, (4,), "float32", "numeric") for n in ("left", "right")]
    m = build_model(recipe, BuildContext((), "float32", "classification", 3, (), seed=1, inputs=tuple(two)))
    assert [t.name for t in m.inputs] == ["left", "right"]
    with pytest.raises(ShapeMismatchError, match=r"the model has 2 inputs \(left, right\) but the data provides one"):
        build_model(recipe, ctx_for((4,)))  # keras would fail at the first step with a traceback
    dense_layers = [layer for layer in m.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.name for layer in dense_layers] == ["enc_l", "out"]  # the shared node adds no layer
    assert len(m.trainable_weights) == 4  # enc_l kernel+bias, out kernel+bias
    assert m.count_params() == (4 * 4 + 4) + (4 * 3 + 3)
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    enc, out = m.get_layer("enc_l"), m.get_layer("out")
    k, c = enc.kernel.numpy(), enc.bias.numpy()
    h = np.tanh(a @ k + c) + np.tanh(b @ k + c) + a
    want = _np_activation("softmax", h @ out.kernel.numpy() + out.bias.numpy())
    np.testing.assert_allclose(np.asarray(m({"left": a, "right": b})), want, rtol=1e-4, atol=1e-6)
    # training moves the shared weights once, for both branches
    m.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    m.fit({"left": a, "right": b}, np.array([0, 1, 2]), epochs=1, verbose=0)
    assert not np.allclose(enc.kernel.numpy(), k)
    assert len(m.trainable_weights) == 4


def test_graph_recipe_single_input_shape_from_data_and_errors(tmp_path):
    m = build_model(make_recipe(tmp_path, """
        graph:
          inputs: [{name: x}]
          nodes:
            - {name: h, type: Dense, units: 2, inputs: [x]}
            - {name: out, type: Dense, units: 3, inputs: [h]}
          outputs: [out]
    """), ctx_for((5,)))
    assert tuple(m.inputs[0].shape) == (None, 5)
    with pytest.raises(RecipeError, match="input 'nope' is not an earlier node"):
        make_recipe(tmp_path, "graph:\n  inputs: [{name: x}]\n  nodes: [{name: h, type: Dense, units: 2, inputs: [nope]}]"
                              "\n  outputs: [h]")
    with pytest.raises(RecipeError, match="needs `type`"):
        make_recipe(tmp_path, "graph:\n  inputs: [{name: x}]\n  nodes: [{name: h, inputs: [x]}]\n  outputs: [h]")
    with pytest.raises(ShapeMismatchError, match=r"graph\.inputs\.0: the model has several inputs but the data "
                                                 r"provides one; declare them in data\.inputs"):
        build_model(make_recipe(tmp_path, "graph:\n  inputs: [{name: a}, {name: b}]\n"
                                          "  nodes: [{name: h, type: Add, inputs: [a, b]}]\n  outputs: [h]"),
                    ctx_for((3,)))


# ---------------------------------------------------------------- application
def _mobilenet(**kw):
    return keras.applications.MobileNet(include_top=False, weights=None, input_shape=(32, 32, 3), pooling="avg",
                                        alpha=0.25, **kw)


def _backbone(model):
    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def test_application_loads_local_weights_and_frozen_backbone_stays_unchanged(tmp_path):
    src = _mobilenet()
    rng = np.random.default_rng(6)
    for v in src.weights:  # make every weight distinctive (BN statistics included)
        v.assign(rng.normal(0.5, 0.1, size=v.shape).astype(np.float32))
    src.save_weights(tmp_path / "bb.weights.h5")
    saved = [w.numpy() for w in src.weights]

    recipe = make_recipe(tmp_path, """
        application:
          name: MobileNet
          weights: bb.weights.h5
          kwargs: {alpha: 0.25}
          trainable: frozen
          dropout: 0.1
    """)
    ctx = ctx_for((32, 32, 3), outputs=2)
    m = build_model(recipe, ctx)
    bb = _backbone(m)
    assert len(bb.weights) == len(saved)
    for got, want in zip(bb.weights, saved, strict=True):
        np.testing.assert_array_equal(got.numpy(), want)
    assert not bb.trainable and bb.trainable_weights == []
    head = m.get_layer("head").kernel.numpy().copy()

    m.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    x = rng.uniform(0, 1, (8, 32, 32, 3)).astype(np.float32)
    m.fit(x, np.arange(8) % 2, batch_size=4, epochs=1, verbose=0)
    for got, want in zip(bb.weights, saved, strict=True):  # moving means / variances too
        np.testing.assert_array_equal(got.numpy(), want)
    assert not np.allclose(m.get_layer("head").kernel.numpy(), head)


@pytest.mark.filterwarnings("ignore:Skipping nested container")  # the mismatched weights file
def test_application_resize_trainable_layers_and_weight_errors(tmp_path):
    ctx = ctx_for((16, 16, 3), outputs=3)
    m = build_model(make_recipe(tmp_path, "application:\n  name: MobileNet\n  resize: [32, 32]\n  trainable: 5\n"
                                          "  kwargs: {alpha: 0.25}"), ctx)
    assert m.get_layer("resize").output.shape[1:3] == (32, 32)
    bb = _backbone(m)
    assert [layer.trainable for layer in bb.layers[:5]] == [False] * 5
    assert any(layer.trainable and layer.weights for layer in bb.layers[5:])
    assert np.asarray(m(np.zeros((1, 16, 16, 3), np.float32))).shape == (1, 3)

    with pytest.raises(DataError, match=r"missing\.weights\.h5: .*not found \(nothing is downloaded\)"):
        build_model(make_recipe(tmp_path, "application: {name: MobileNet, weights: missing.weights.h5, "
                                          "kwargs: {alpha: 0.25}}"), ctx_for((32, 32, 3)))
    _mobilenet().save_weights(tmp_path / "other.weights.h5")
    with pytest.raises(ModelError, match=r"model\.application\.weights: .*other\.weights\.h5"):
        build_model(make_recipe(tmp_path, "application: {name: MobileNet, weights: other.weights.h5, "
                                          "kwargs: {alpha: 0.5}}"), ctx_for((32, 32, 3)))
    with pytest.raises(RecipeError, match="did you mean 'MobileNet'"):
        make_recipe(tmp_path, "application: {name: MobileNt}")
    with pytest.raises(ShapeMismatchError, match=r"input_shape \(64, 64, 3\).*\(32, 32, 3\)"):
        build_model(make_recipe(tmp_path, "application: {name: MobileNet, input_shape: [64, 64, 3], "
                                          "kwargs: {alpha: 0.25}}"), ctx_for((32, 32, 3)))
    with pytest.raises(ShapeMismatchError, match=r"input_shape \(32, 32, 3\).*\(40, 40, 3\).*resize"):
        build_model(make_recipe(tmp_path, "application: {name: MobileNet, input_shape: [32, 32, 3], resize: [40, 40], "
                                          "kwargs: {alpha: 0.25}}"), ctx_for((32, 32, 3)))
    with pytest.raises(ModelError, match="multiple values for keyword argument 'weights'"):  # never downloads
        build_model(make_recipe(tmp_path, "application: {name: MobileNet, kwargs: {alpha: 0.25, weights: imagenet}}"),
                    ctx_for((32, 32, 3)))


# ---------------------------------------------------------------- code
CODE_MODULE = '''
import keras

def build(input_shape, num_outputs, width=2):
    inp = keras.Input(input_shape)
    h = keras.layers.Dense(width, name="hidden")(inp)
    return keras.Model(inp, keras.layers.Dense(num_outputs, activation="softmax")(h))

def not_a_model(input_shape, num_outputs):
    return "nope"
'''


def test_code_model_needs_allow_code(tmp_path, monkeypatch):
    (tmp_path / "dlcli_test_code_mod.py").write_text(CODE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = make_recipe(tmp_path, "code: dlcli_test_code_mod:build\nargs: {width: 5}")
    with pytest.raises(ModelError, match="--allow-code"):
        build_model(recipe, ctx_for((4,)))
    m = build_model(recipe, ctx_for((4,)), allow_code=True)
    assert m.get_layer("hidden").units == 5
    assert np.asarray(m(np.zeros((2, 4), np.float32))).shape == (2, 3)
    with pytest.raises(ModelError, match="returned str, expected a keras.Model"):
        build_model(make_recipe(tmp_path, "code: dlcli_test_code_mod:not_a_model"), ctx_for((4,)), allow_code=True)
    with pytest.raises(ModelError, match="has no function 'missing'"):
        build_model(make_recipe(tmp_path, "code: dlcli_test_code_mod:missing"), ctx_for((4,)), allow_code=True)
    with pytest.raises(ModelError, match="cannot import 'dlcli_no_such_module'"):
        build_model(make_recipe(tmp_path, "code: dlcli_no_such_module:f"), ctx_for((4,)), allow_code=True)
    with pytest.raises(RecipeError, match="package.module:function"):
        make_recipe(tmp_path, "code: 'os.system'")


# ---------------------------------------------------------------- shape checks against the data
def test_explicit_input_shape_must_match_data(tmp_path):
    for model in ("layers:\n  - {type: Dense, units: 3}", "architecture: mlp\nunits: [2]"):
        with pytest.raises(ShapeMismatchError, match=r"\(5,\).*\(6,\)"):
            build_model(make_recipe(tmp_path, model + "\ninput_shape: [5]"), ctx_for((6,)))
    m = build_model(make_recipe(tmp_path, "layers:\n  - {type: Dense, units: 3}\ninput_shape: [6]"), ctx_for((6,)))
    assert tuple(m.inputs[0].shape) == (None, 6)


def test_classification_output_with_too_few_units(tmp_path):
    with pytest.raises(ShapeMismatchError, match=r"labels run 0\.\.3 \(4 classes\).*\(None, 2\).*labels out of range"):
        build_model(make_recipe(tmp_path, "layers:\n  - {type: Dense, units: 2}"), ctx_for((6,), outputs=4))
    with pytest.raises(ShapeMismatchError, match=r"\(batch, classes\).*\(None, 6, 4\)"):
        build_model(make_recipe(tmp_path, "layers:\n  - {type: Dense, units: 4}"), ctx_for((6, 2), outputs=4))


def test_regression_and_reconstruction_output_shapes(tmp_path):
    with pytest.raises(ShapeMismatchError, match=r"output shape \(None, 2\).*regression targets' shape \(None,\)"):
        build_model(make_recipe(tmp_path, "layers:\n  - {type: Dense, units: 2}", task="regression"),
                    ctx_for((3,), "regression", 1))
    inp = keras.Input((4,))
    good = keras.Model(inp, keras.layers.Dense(4)(inp))
    check_model_fits_data(good, ctx_for((4,), "reconstruction", 4))
    wide = keras.Model(inp, keras.layers.Dense(5)(inp))
    with pytest.raises(ShapeMismatchError, match=r"output shape \(None, 5\).*reconstruction targets' shape \(None, 4\)"):
        check_model_fits_data(wide, ctx_for((4,), "reconstruction", 4))
    with pytest.raises(ShapeMismatchError, match=r"model's input shape \(None, 4\).*\(batch, 5\)"):
        check_model_fits_data(good, ctx_for((5,), "regression", 4, out_shape=(4,)))


# ---------------------------------------------------------------- context from real data
def test_context_from_data_tokens_text_regression(tmp_path):
    # token ids in the test split beyond the training split's maximum must fit the embedding
    x_train = np.random.default_rng(7).integers(0, 10, (20, 5)).astype(np.int32)
    x_test = np.full((4, 5), 14, np.int32)
    np.savez(tmp_path / "tr.npz", x=x_train, y=np.arange(20) % 2)
    np.savez(tmp_path / "te.npz", x=x_test, y=np.arange(4) % 2)
    recipe = make_recipe(tmp_path, "architecture: rnn\nunits: [2]\nembedding_dim: 2",
                         data="source: numpy\npath: tr.npz\ntest_path: te.npz\nsplit: {validation: 0.0}")
    bundle = load_data(recipe)
    ctx = context_from_data(recipe, bundle)
    assert (ctx.input_shape, ctx.input_dtype, ctx.num_outputs, ctx.vocab_size) == ((5,), "int32", 2, 15)
    m = build_model(recipe, ctx)
    assert np.asarray(m(bundle.splits["test"].x)).shape == (4, 2)

    (tmp_path / "t.csv").write_text("text,label\na b c,x\nb c,y\nc d,z\n")
    recipe = make_recipe(tmp_path, "architecture: transformer\nembed_dim: 4\nnum_heads: 1\nff_dim: 4\nnum_blocks: 1",
                         data="source: text\npath: t.csv\nsequence_length: 4\nsplit: {validation: 0.0, test: 0.0}")
    ctx = context_from_data(recipe, load_data(recipe))
    assert ctx.vocab_size == 6 and ctx.num_outputs == 3 and ctx.input_shape == (4,)

    recipe = make_recipe(tmp_path, "architecture: mlp\nunits: [3]", task="regression",
                         data="source: synthetic\nkind: regression\nsamples: 20\nshape: [2, 3]")
    ctx = context_from_data(recipe, load_data(recipe))
    assert ctx.num_outputs == 1 and ctx.output_shape == () and ctx.input_shape == (2, 3)
    assert np.asarray(build_model(recipe, ctx)(np.zeros((2, 2, 3), np.float32))).shape == (2, 1)


def test_tiny_recipe_builds_and_trains(tiny_recipe):
    recipe = load_recipe(tiny_recipe)
    bundle = load_data(recipe)
    ctx = context_from_data(recipe, bundle)
    assert ctx.num_outputs == 3 and ctx.input_shape == (6,)
    m = build_model(recipe, ctx)
    m.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = m.fit(bundle.train.x, bundle.train.y, batch_size=16, epochs=2, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def test_application_batchnorm_momentum_override(tmp_path):
    ctx = ctx_for((32, 32, 3), outputs=3)
    m = build_model(make_recipe(tmp_path, "application: {name: MobileNet, batchnorm_momentum: 0.9, "
                                          "kwargs: {alpha: 0.25}}"), ctx)
    bns = [layer for layer in _backbone(m).layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert bns and all(layer.momentum == 0.9 for layer in bns)
    m = build_model(make_recipe(tmp_path, "application: {name: MobileNet, kwargs: {alpha: 0.25}}"), ctx)
    assert all(layer.momentum != 0.9 for layer in _backbone(m).layers
               if isinstance(layer, keras.layers.BatchNormalization))

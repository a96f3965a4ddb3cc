"""Turn a model description into a ``keras.Model``.

Five ways in (see docs/recipes.md): a registered architecture, a list of layers,
a functional graph, a keras.applications backbone, or user code (only with
``allow_code=True``). Layer classes are looked up by name in ``keras.layers``;
nothing from a recipe is evaluated.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

from dlcli.errors import ModelError, ShapeMismatchError, raise_if_bug
from dlcli.models.context import BuildContext, InputInfo


def context_from_data(recipe, bundle) -> BuildContext:
    pre = bundle.preprocessor
    out_shape = bundle.output_shape()
    if recipe.task == "classification":
        num_outputs = bundle.num_classes
    elif recipe.task == "regression":
        num_outputs = int(math.prod(out_shape)) if out_shape else 1
    else:
        num_outputs = int(math.prod(pre.input_shape))
    if isinstance(pre.input_shape, dict):  # several named inputs
        inputs = tuple(InputInfo(n, tuple(pre.input_shape[n]), pre.input_dtype[n], pre.layout[n]["type"],
                                 pre.vocab_size(n)) for n in pre.input_shape)
        return BuildContext(input_shape=(), input_dtype="float32", task=recipe.task, num_outputs=num_outputs,
                            output_shape=tuple(out_shape), seed=recipe.seed, inputs=inputs)
    vocab = getattr(pre.featurizer, "vocab_size", None)
    if vocab is None and pre.input_dtype == "int32":  # every split's ids must fit the embedding
        vocab = max(_max_value(s) for s in bundle.splits.values() if len(s)) + 1
    return BuildContext(
        input_shape=tuple(pre.input_shape), input_dtype=pre.input_dtype, task=recipe.task,
        num_outputs=num_outputs, output_shape=tuple(out_shape), vocab_size=vocab, seed=recipe.seed,
    )


def _max_value(split) -> int:
    """The largest value (token id) in a split: in memory, or in one streamed pass."""
    if not split.streamed:
        return int(split.x.max())
    import numpy as np

    return max(int(np.max(x)) for x, _ in split.dataset(4096).as_numpy_iterator())


def _regularizer(value: Any):
    import keras

    if isinstance(value, dict) and set(value) <= {"l1", "l2"}:
        return keras.regularizers.L1L2(l1=float(value.get("l1", 0.0)), l2=float(value.get("l2", 0.0)))
    return value


# Layers that run user code or foreign graphs: like `model.code`, only with --allow-code.
CODE_LAYERS = frozenset({"Lambda", "TFSMLayer", "JaxLayer", "FlaxLayer", "TorchModuleWrapper"})


def named_types(value) -> list[str]:
    """Every layer type named anywhere inside ``value`` (a layer's arguments: wrappers nest
    layers in ``layer``, ``backward_layer``, ``cell`` ..., at any depth): the values of
    ``type`` and ``class_name`` keys of every dict, walked without recursion."""
    found, stack = [], [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            found += [str(t) for k, t in v.items() if k in ("type", "class_name") and isinstance(t, str)]
            stack += list(v.values())
        elif isinstance(v, (list, tuple)):
            stack += list(v)
    return found


def check_code_layers(spec, allow_code: bool, source=None) -> None:
    """Refuse a model that executes code (``model.code``; Lambda, TFSMLayer, ... however deep
    inside other layers' arguments they are named) unless code is allowed. ``source``: the
    recipe's :class:`~dlcli.recipe.loader.Source`, so the error names the file and line."""
    if allow_code:
        return

    def refuse(path: tuple, what: str):
        at = f"{source.where(path)}: " if source is not None else ""
        raise ModelError(f"{at}{'.'.join(map(str, path))}: {what}; pass --allow-code to allow it")

    if hasattr(spec, "code"):
        refuse(("model", "code"), f"{spec.code!r} runs user code")
    layers = getattr(spec, "layers", None) or getattr(getattr(spec, "graph", None), "nodes", None) or []
    where = ("model", "layers") if hasattr(spec, "layers") else ("model", "graph", "nodes")
    for i, layer in enumerate(layers):
        for t in [layer.type, *named_types(layer.args())]:
            if t in CODE_LAYERS or t.rsplit(">", 1)[-1].rsplit(".", 1)[-1] in CODE_LAYERS:
                refuse((*where, i, "type"), f"{t} runs code or a foreign graph")


def make_layer(spec, where: str, name: str | None = None):
    """A ``keras.layers`` instance from a LayerSpec; errors name the recipe key."""
    import keras

    cls = getattr(keras.layers, spec.type, None)
    if cls is None or not isinstance(cls, type) or not issubclass(cls, keras.layers.Layer):
        raise ModelError(f"{where}.type: {spec.type!r} is not a keras.layers class")
    args = {k: _regularizer(v) if k.endswith("_regularizer") else v for k, v in spec.args().items()}
    if name is not None:
        args.setdefault("name", name)
    if "layer" in args and isinstance(args["layer"], dict):  # wrappers: Bidirectional, TimeDistributed
        from pydantic import ValidationError

        from dlcli.recipe.model import LayerSpec

        try:
            inner = LayerSpec.model_validate(args["layer"])
        except ValidationError as exc:  # its first line is only "1 validation error for LayerSpec"
            err = exc.errors(include_url=False)[0]
            key = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            raise ModelError(f"{where}.layer{'.' + key if key else ''}: {msg}") from exc
        args["layer"] = make_layer(inner, f"{where}.layer")
    try:
        return cls(**args)
    except Exception as exc:  # constructors raise many types; a TypeError here is the recipe's arguments, not a bug
        raise ModelError(f"{where} ({spec.type}): {_first_line(exc)}") from exc


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _input(ctx: BuildContext, shape, name: str = "inputs", dtype: str | None = None):
    import keras

    return keras.Input(shape=tuple(shape), dtype=dtype or ctx.input_dtype, name=name)


def _checked_input_shape(model_spec, ctx: BuildContext) -> tuple:
    shape = getattr(model_spec, "input_shape", None)
    if shape is None:
        return ctx.input_shape
    if len(shape) != len(ctx.input_shape) or any(s is not None and s != d for s, d in zip(shape, ctx.input_shape, strict=True)):
        raise ShapeMismatchError(
            f"model.input_shape {tuple(shape)} does not match the data's example shape {tuple(ctx.input_shape)}"
        )
    return tuple(shape)


def _call(layer, x, where: str):
    try:
        return layer(x)
    except Exception as exc:
        raise_if_bug(exc)
        shape = [t.shape for t in x] if isinstance(x, list) else x.shape
        raise ModelError(f"{where}: cannot apply {type(layer).__name__} to input of shape {shape}: {_first_line(exc)}") from exc


def build_layers(spec, ctx: BuildContext):
    import keras

    inputs = _input(ctx, _checked_input_shape(spec, ctx))
    x = inputs
    for i, layer_spec in enumerate(spec.layers):
        x = _call(make_layer(layer_spec, f"model.layers.{i}"), x, f"model.layers.{i}")
    return keras.Model(inputs, x, name="sequential")


def build_graph(spec, ctx: BuildContext):
    import keras

    g = spec.graph
    tensors: dict[str, Any] = {}
    layers: dict[str, Any] = {}
    inputs = []
    known = {info.name: info for info in ctx.inputs}
    for i, inp in enumerate(g.inputs):
        shape, dtype = inp.shape, inp.dtype
        if inp.name in known:  # one of the data's named inputs: its shape and dtype by default
            shape = tuple(known[inp.name].shape) if shape is None else shape
            dtype = dtype or known[inp.name].dtype
        elif shape is None:
            if len(g.inputs) > 1 or ctx.inputs:
                raise ShapeMismatchError(_unknown_input(inp.name, i, ctx))
            shape = _checked_input_shape(spec, ctx)
        t = keras.Input(shape=tuple(shape), dtype=dtype or ctx.input_dtype, name=inp.name)
        tensors[inp.name] = t
        inputs.append(t)
    for i, node in enumerate(g.nodes):
        where = f"model.graph.nodes.{i}"
        layer = layers[node.share] if node.share else make_layer(node, where, name=node.name)
        layers[node.name] = layer
        args = [tensors[n] for n in node.inputs]
        tensors[node.name] = _call(layer, args if len(args) > 1 else args[0], where)
    outputs = [tensors[o] for o in g.outputs]
    model_inputs = {t.name: t for t in inputs} if len(inputs) > 1 else inputs[0]  # several: fed by name
    return keras.Model(model_inputs, outputs if len(outputs) > 1 else outputs[0], name="graph")


def _unknown_input(name: str, i: int, ctx: BuildContext) -> str:
    if ctx.inputs:
        return (f"model.graph.inputs.{i}: input {name!r} is not one of the data's inputs "
                f"({', '.join(x.name for x in ctx.inputs)}; data.inputs)")
    return (f"model.graph.inputs.{i}: the model has several inputs but the data provides one; "
            "declare them in data.inputs (csv), or give each graph input its shape")


def build_application(spec, ctx: BuildContext):
    import keras

    app = spec.application
    ctor = getattr(keras.applications, app.name, None)
    if ctor is None:
        raise ModelError(f"model.application.name: {app.name!r} is not in keras.applications")
    data_shape = _checked_input_shape(spec, ctx)
    inputs = _input(ctx, data_shape)
    x = inputs
    fed = (*app.resize, data_shape[-1]) if app.resize else tuple(data_shape)
    if app.input_shape and (len(app.input_shape) != len(fed)
                            or any(d is not None and a != d for a, d in zip(app.input_shape, fed, strict=False))):
        raise ShapeMismatchError(
            f"model.application.input_shape {tuple(app.input_shape)} does not match the backbone's inputs {fed} "
            f"(the data's example shape{', resized by model.application.resize' if app.resize else ''})"
        )
    shape = tuple(app.input_shape or fed)
    if app.resize:
        x = keras.layers.Resizing(*app.resize, name="resize")(x)
    try:
        backbone = ctor(include_top=False, weights=None, input_shape=shape, pooling=app.pooling, **app.kwargs)
    except Exception as exc:  # a TypeError here is the recipe's kwargs (weights=...), not a bug
        raise ModelError(f"model.application ({app.name}): {_first_line(exc)}") from exc
    if app.weights:
        from pathlib import Path

        path = Path(app.weights)
        if not path.exists():
            from dlcli.errors import DataError

            raise DataError(f"{path}: model.application.weights file not found (nothing is downloaded)")
        try:
            backbone.load_weights(str(path))
        except Exception as exc:
            raise_if_bug(exc)
            raise ModelError(f"model.application.weights: {path}: {_first_line(exc)}") from exc
    if app.batchnorm_momentum is not None:
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = app.batchnorm_momentum
    if app.trainable == "frozen":
        backbone.trainable = False
    elif isinstance(app.trainable, int):
        for layer in backbone.layers[: app.trainable]:
            layer.trainable = False
    x = backbone(x, training=False if app.trainable == "frozen" else None)
    if app.dropout:
        x = keras.layers.Dropout(app.dropout, seed=ctx.seed)(x)
    x = keras.layers.Dense(ctx.num_outputs, name="head")(x)
    x = keras.layers.Activation(ctx.head_activation(spec.output_activation), dtype="float32", name="head_act")(x)
    return keras.Model(inputs, x, name=f"{app.name.lower()}_transfer")


def build_code(spec, ctx: BuildContext, allow_code: bool):
    import keras

    check_code_layers(spec, allow_code)
    mod_name, _, fn_name = spec.code.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelError(f"model.code: cannot import {mod_name!r}: {exc}") from exc
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ModelError(f"model.code: {mod_name!r} has no function {fn_name!r}")
    model = fn(input_shape=_checked_input_shape(spec, ctx), num_outputs=ctx.num_outputs, **spec.args)
    if not isinstance(model, keras.Model):
        raise ModelError(f"model.code: {spec.code} returned {type(model).__name__}, expected a keras.Model")
    return model


def build_model(recipe, ctx: BuildContext, allow_code: bool = False):
    spec = recipe.model
    check_code_layers(spec, allow_code)
    if ctx.inputs and not (hasattr(spec, "graph") or getattr(spec, "architecture", None) == "mlp"):
        kind = f"architecture {spec.architecture}" if hasattr(spec, "architecture") else "this model kind"
        raise ModelError(f"model: {kind} takes one input; data.inputs declares {len(ctx.inputs)} "
                         f"({', '.join(i.name for i in ctx.inputs)}): use architecture mlp or a graph model")
    if hasattr(spec, "architecture"):
        from dlcli.models.registry import get_architecture

        model = get_architecture(spec.architecture).build(spec, ctx)
        if spec.input_shape is not None:
            _checked_input_shape(spec, ctx)
    elif hasattr(spec, "layers"):
        model = build_layers(spec, ctx)
    elif hasattr(spec, "graph"):
        model = build_graph(spec, ctx)
    elif hasattr(spec, "application"):
        model = build_application(spec, ctx)
    else:
        model = build_code(spec, ctx, allow_code)
    check_model_fits_data(model, ctx)
    return model


def _check_inputs(model, ctx: BuildContext) -> None:
    """Every named input of the data against the model's inputs of the same name."""
    have = {t.name.split(":")[0]: t for t in model.inputs}
    want = {info.name: info for info in ctx.inputs}
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or extra:
        raise ShapeMismatchError(
            f"the model's inputs ({', '.join(sorted(have))}) do not match the data's inputs ({', '.join(sorted(want))})"
            + (f": no model input for {', '.join(missing)}" if missing else "")
            + (f": the data has no input {', '.join(extra)}" if extra else ""))
    for name, info in want.items():
        m_in = tuple(have[name].shape[1:])
        if len(m_in) != len(info.shape) or any(a is not None and a != b for a, b in zip(m_in, info.shape, strict=True)):
            raise ShapeMismatchError(f"input {name!r}: the model's shape {(None, *m_in)} does not match the "
                                     f"data's (batch, {', '.join(map(str, info.shape))})")


def check_model_fits_data(model, ctx: BuildContext) -> None:
    """Input and output shapes against the data, before any training."""
    if ctx.inputs:
        _check_inputs(model, ctx)
    elif len(model.inputs) > 1:
        raise ShapeMismatchError(
            f"the model has {len(model.inputs)} inputs ({', '.join(t.name.split(':')[0] for t in model.inputs)}) "
            "but the data provides one; declare several in data.inputs (csv)")
    if len(model.inputs) == 1 and not ctx.inputs:
        m_in = tuple(model.inputs[0].shape[1:])
        if len(m_in) != len(ctx.input_shape) or any(a is not None and a != b for a, b in zip(m_in, ctx.input_shape, strict=True)):
            raise ShapeMismatchError(
                f"the model's input shape {(None, *m_in)} does not match the data's (batch, {', '.join(map(str, ctx.input_shape))})"
            )
    if len(model.outputs) != 1:
        return  # multi-output graphs: labels must be provided per output by the user's loss
    out = tuple(model.outputs[0].shape[1:])
    if ctx.task == "classification":
        k = ctx.num_outputs
        if len(out) != 1:
            raise ShapeMismatchError(
                f"classification needs a model output of shape (batch, classes); the model's output is {(None, *out)}"
            )
        if out[0] is not None and out[0] < k:
            raise ShapeMismatchError(
                f"labels run 0..{k - 1} ({k} classes) but the model's output layer has shape {(None, *out)}: "
                f"labels out of range for the output layer (give the last layer {k} units)"
            )
    else:
        # "generation": a GAN's networks, whose output_shape is what they must produce
        want = ctx.output_shape if ctx.task in ("regression", "generation") else ctx.input_shape
        flat_ok = ctx.task in ("regression", "generation") and out in ((1,), ()) and tuple(want) in ((1,), ())
        flat_ok = flat_ok or (ctx.task == "regression" and not want and out in ((1,), ()))
        what = "expected" if ctx.task == "generation" else f"{ctx.task} targets'"
        if not flat_ok and tuple(out) != tuple(want):
            raise ShapeMismatchError(
                f"the model's output shape {(None, *out)} does not match the {what} shape {(None, *want)}"
            )

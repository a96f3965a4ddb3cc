"""``qat(run_dir, ...) -> QatResult``: quantization-aware training of a trained run.

Keras 3 has no quantization-aware training and tfmot's needs Keras 2 (keras#18930), so it
is built here on Keras 3: the trained model is cloned with its Dense / Conv1D / Conv2D /
DepthwiseConv2D layers replaced by the fake-quantizing layers of
:mod:`dlcli.models.qat_layers` (a BatchNormalization right after one is folded into its
kernel and bias first, a ReLU right after it fused, as int8 TFLite will run them), then
fine-tuned through the one trainer. The new run's ``model.keras`` carries the learned
output ranges; ``dlcli export RUN --quantize int8`` hands them to the converter, which
uses them instead of calibrating those tensors.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.atomic import write_json
from dlcli.errors import ModelError, RunDirError, UsageError, raise_if_bug

_RELUS = {"relu", "relu6"}


@dataclass
class Plan:
    """What the QAT clone does to each layer, by name."""

    wrap: dict[str, Any] = field(default_factory=dict)  # layer -> the layer it was (kept for its weights)
    fold: dict[str, Any] = field(default_factory=dict)  # quantized layer -> the BatchNormalization folded in
    fuse: dict[str, str] = field(default_factory=dict)  # quantized layer -> the activation fused in
    outputs: set[str] = field(default_factory=set)  # average pooling / Add / Concatenate: output range learned
    inputs: set[str] = field(default_factory=set)  # quantized layers fed by a float model input (its range learned)
    removed: set[str] = field(default_factory=set)  # BatchNormalization / ReLU layers folded in (become QatFolded)
    float_layers: list[str] = field(default_factory=list)  # quantizable kinds left in float, with why

    def to_json(self) -> dict[str, Any]:
        return {"quantized": sorted(self.wrap), "folded_batch_norm": {k: v.name for k, v in self.fold.items()},
                "fused_activation": self.fuse, "input_ranges": sorted(self.inputs),
                "output_ranges": sorted(self.outputs), "float_layers": self.float_layers}


def plan_qat(model, spec) -> Plan:
    """Which layers become fake-quantized, which BatchNormalization / ReLU fold into them."""
    from dlcli.models.qat_layers import OUTPUT_QAT_CLASSES, QAT_CLASSES

    plan = Plan()
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in OUTPUT_QAT_CLASSES and not _cannot_wrap(layer, spec):
            plan.outputs.add(layer.name)
        if kind not in QAT_CLASSES:
            continue
        why = _cannot_wrap(layer, spec)
        if why:
            plan.float_layers.append(f"{layer.name} ({why})")
            continue
        plan.wrap[layer.name] = layer
        if any(layer.input is t and t.dtype.startswith("float") for t in model.inputs):
            plan.inputs.add(layer.name)
        tail = layer
        nxt = _only_consumer(tail)
        if spec.fold_batch_norm and _linear(layer) and type(nxt).__name__ == "BatchNormalization" \
                and nxt.axis in (-1, len(nxt.input.shape) - 1):
            plan.fold[layer.name], tail = nxt, nxt
            plan.removed.add(nxt.name)
            nxt = _only_consumer(tail)
        act = _relu_name(nxt)
        if act and _linear(layer):
            plan.fuse[layer.name] = act
            plan.removed.add(nxt.name)
    return plan


def _cannot_wrap(layer, spec) -> str:
    if layer.name in spec.exclude:
        return "excluded"
    if len(layer._inbound_nodes) != 1:
        return "shared by several calls"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first"
    if getattr(layer, "lora_enabled", False) or getattr(layer, "quantization_mode", None):
        return "already quantized or LoRA"
    return ""


def _only_consumer(layer):
    nodes = layer._outbound_nodes
    return nodes[0].operation if len(nodes) == 1 and len(layer._inbound_nodes) == 1 else None


def _linear(layer) -> bool:
    import keras

    return layer.activation in (None, keras.activations.linear)


def _relu_name(layer) -> str | None:
    kind = type(layer).__name__
    if kind == "ReLU" and layer.negative_slope == 0 and layer.threshold == 0 and layer.max_value in (None, 6, 6.0):
        return "relu" if layer.max_value is None else "relu6"
    if kind == "Activation":
        name = getattr(layer.activation, "__name__", "")
        return name if name in _RELUS else None
    return None


def qat_model(model, spec):
    """``(clone, plan)``: ``model`` with its quantizable layers fake-quantized, BatchNorm folded."""
    import keras

    from dlcli.models.qat_layers import OUTPUT_QAT_CLASSES, QAT_CLASSES, QatFolded

    plan = plan_qat(model, spec)
    if not plan.wrap:
        why = f" ({'; '.join(plan.float_layers)})" if plan.float_layers else ""
        raise UsageError(f"nothing to quantize-aware train: no Dense / Conv1D / Conv2D / DepthwiseConv2D layer{why}")

    def clone(layer):
        if layer.name in plan.removed:
            return QatFolded(name=layer.name)
        if layer.name in plan.outputs:
            return OUTPUT_QAT_CLASSES[type(layer).__name__].from_config(layer.get_config() | {"ema_decay": spec.ema_decay})
        if layer.name not in plan.wrap:
            return layer  # shared with the source model: its weights come along
        config = layer.get_config() | {"ema_decay": spec.ema_decay, "quantize_input": layer.name in plan.inputs,
                                       "per_channel": spec.per_channel}
        if layer.name in plan.fold:
            config["use_bias"] = True
        if layer.name in plan.fuse:
            config["activation"] = plan.fuse[layer.name]
        return QAT_CLASSES[type(layer).__name__].from_config(config)

    try:
        out = keras.models.clone_model(model, clone_function=clone)
    except Exception as exc:
        raise_if_bug(exc)
        raise ModelError(f"cannot wrap this model for quantization-aware training: {str(exc).splitlines()[0][:200]} "
                         "(a functional or Sequential model is needed)") from exc
    for name, source in plan.wrap.items():
        kernel, bias = _folded(source, plan.fold.get(name))
        target = out.get_layer(name)
        target.kernel.assign(kernel)
        if bias is not None:
            target.bias.assign(bias)
    return out, plan


def _folded(layer, bn) -> tuple[np.ndarray, np.ndarray | None]:
    """``layer``'s (kernel, bias) with ``bn`` (inference statistics) folded in."""
    kernel = np.asarray(layer.kernel.numpy())
    bias = np.asarray(layer.bias.numpy()) if layer.use_bias else None
    if bn is None:
        return kernel, bias
    channels = kernel.shape[-1] * (kernel.shape[-2] if type(layer).__name__ == "DepthwiseConv2D" else 1)
    gamma = np.asarray(bn.gamma.numpy()) if bn.scale else np.ones(channels, "float32")
    beta = np.asarray(bn.beta.numpy()) if bn.center else np.zeros(channels, "float32")
    scale = gamma / np.sqrt(np.asarray(bn.moving_variance.numpy()) + bn.epsilon)
    shift = beta - np.asarray(bn.moving_mean.numpy()) * scale
    if type(layer).__name__ == "DepthwiseConv2D":
        kernel = kernel * scale.reshape(kernel.shape[-2], kernel.shape[-1])
    else:
        kernel = kernel * scale
    return kernel.astype("float32"), ((0 if bias is None else bias) * scale + shift).astype("float32")


@dataclass
class QatResult:
    run_dir: Path
    source: Path
    metrics: dict[str, dict[str, float]]
    float_metrics: dict[str, dict[str, float]]
    plan: dict[str, Any]
    duration_s: float = 0.0
    weights_sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "source": str(self.source), "metrics": self.metrics,
                "float_metrics": self.float_metrics, **self.plan, "duration_s": round(self.duration_s, 3),
                "weights_sha256": self.weights_sha256}


def qat(run_dir: str | Path, out_dir: str | Path | None = None, *, spec=None, overwrite: bool = False,
        resume: bool = False, reuse: bool = False, progress: str = "plain", console=None, log=None,
        overrides: list[str] | None = None, **options) -> QatResult:
    """Quantization-aware fine-tuning of ``run_dir``'s model through the one trainer, into
    ``out_dir`` (default RUN_DIR-qat). ``options`` are QatSpec keys (``epochs=2``; None
    leaves the value) laid over ``spec``, else the run's ``compress.qat``, and validated;
    ``overrides`` (``--set``) change the source recipe as read."""
    import json

    from dlcli.recipe.overrides import apply_overrides
    from dlcli.rundir import open_run
    from dlcli.train.trainer import prepare_devices, run_stage

    t0 = time.time()
    run = open_run(run_dir, overrides)
    prepare_devices(run.recipe.train)
    spec = apply_overrides(spec or run.recipe.compress.qat_spec(), options)
    if spec.learning_rate is None:
        lr = run.recipe.train.optimizer.learning_rate
        spec = spec.model_copy(update={"learning_rate": (lr if isinstance(lr, float) else lr.initial) / 10})
    out = Path(out_dir) if out_dir else run.path.parent / f"{run.path.name}-qat"
    if out.resolve() == run.path.resolve():
        raise RunDirError(f"{out}: the quantization-aware run needs its own directory (not the source run)")
    _check(run, spec)
    res = run_stage(qat_stage(run, spec), out, overwrite=overwrite, resume=resume, reuse=reuse, progress=progress,
                    console=console, log=log)
    report = json.loads((out / "qat.json").read_text(encoding="utf-8"))
    float_metrics = json.loads((run.path / "metrics.json").read_text(encoding="utf-8"))
    return QatResult(out, run.path, res.metrics, float_metrics, report, time.time() - t0, res.weights_digest)


def _check(run, spec) -> None:
    """Unknown --exclude names, nothing to quantize, an unclonable model: before anything is written."""
    model = run.load_model()
    known = {layer.name for layer in model.layers}
    unknown = [e for e in spec.exclude if e not in known]
    if unknown:
        raise UsageError(f"--exclude: no layer named {', '.join(unknown)} (layers: {', '.join(sorted(known))[:200]})")
    qat_model(model, spec)


def qat_stage(run, spec):
    """The QAT stage for the one trainer: the source run's data and training settings with
    ``spec``'s epochs and a cosine-decayed rate; no early stopping or best.keras."""
    from dlcli.recipe.train import CosineSchedule
    from dlcli.train.stage import Stage, Trainable, compile_like_recipe

    recipe = run.recipe
    qat_recipe = recipe.model_copy(update={"compress": recipe.compress.model_copy(update={"qat": spec})})
    tr = recipe.train
    callbacks = tr.callbacks.model_copy(update={"early_stopping": None, "reduce_lr_on_plateau": None})
    train = tr.model_copy(update={"epochs": spec.epochs, "callbacks": callbacks})
    optimizer = tr.optimizer.model_copy(update={"learning_rate": CosineSchedule(schedule="cosine",
                                                                              initial=spec.learning_rate)})

    pruned = (run.path / "sparsity.json").exists()

    def build(ctx, steps: int, replicas: int) -> Trainable:
        model, plan = qat_model(run.load_model(), spec)
        compile_like_recipe(model, recipe, ctx, steps, optimizer, train=train)
        if not pruned:
            return Trainable(model)
        from dlcli.compress.graph_masks import FixedMasks  # a pruned source keeps its zeros

        keep = FixedMasks([model.get_layer(name).kernel for name in sorted(plan.wrap)])
        return Trainable(model, train_step=keep.wrap(model.train_step), state=keep.variables)

    def finish(out: Path, trainable, metrics) -> None:
        saved = run.load_model(out / "model.keras")
        plan = plan_qat(run.load_model(), spec).to_json()
        plan["ranges"] = {layer.name: [float(layer.range_min.numpy()), float(layer.range_max.numpy())]
                          for layer in saved.layers if hasattr(layer, "range_min")}
        if pruned:  # zeros over the quantized kernels, as the source's sparsity counts them
            kernels = [np.asarray(layer.kernel.numpy()) for layer in saved.layers if hasattr(layer, "range_min")
                       and hasattr(layer, "kernel")]
            plan["kept_sparsity"] = sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)
        write_json(out / "qat.json", {**plan, "epochs": spec.epochs, "learning_rate": spec.learning_rate,
                                      "per_channel": spec.per_channel, "source": str(run.path.resolve())})

    return Stage("qat", qat_recipe, build, train=train, preprocessor=run.preprocessor,
                 env={"qat_from": str(run.path.resolve())}, finish=finish, best_checkpoint=False)

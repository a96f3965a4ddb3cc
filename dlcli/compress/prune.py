"""``prune(run_dir, ...) -> PruneResult``: fine-tune a trained run while masking its
smallest weights; write a new run directory with a plain Keras model and sparsity.json."""

from __future__ import annotations

import gzip
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.atomic import write_json
from dlcli.errors import RunDirError, UsageError

# (layer class name, weight attribute or path suffix, input axis from the end)
PRUNABLE = {
    "Dense": ("kernel", -2), "EinsumDense": ("kernel", 0), "Conv1D": ("kernel", -2), "Conv2D": ("kernel", -2),
    "Conv3D": ("kernel", -2), "Conv1DTranspose": ("kernel", -1), "Conv2DTranspose": ("kernel", -1),
    "SeparableConv2D": ("pointwise_kernel", -2), "SeparableConv1D": ("pointwise_kernel", -2),
    "Embedding": ("embeddings", -1), "LSTM": ("kernel", -2), "GRU": ("kernel", -2), "SimpleRNN": ("kernel", -2),
}


@dataclass
class Target:
    layer: str
    variable: Any
    input_axis: int
    kind: str = ""  # the layer's class name

    @property
    def path(self) -> str:
        return self.variable.path


def prunable_weights(model, exclude: list[str] | None = None) -> list[Target]:
    """Kernels of Dense / Conv / Embedding / recurrent / attention layers, minus ``exclude``."""
    exclude = set(exclude or [])
    out: list[Target] = []
    seen: set[int] = set()
    for layer in model._flatten_layers(include_self=False):
        cls = type(layer).__name__
        if layer.name in exclude or cls not in PRUNABLE:
            continue
        attr, axis = PRUNABLE[cls]
        holder = layer.cell if cls in ("LSTM", "GRU", "SimpleRNN") else layer
        var = getattr(holder, attr, None)
        if var is None or id(var) in seen or len(var.shape) < 2:
            continue
        seen.add(id(var))
        out.append(Target(layer.name, var, axis % len(var.shape), cls))
    return out


def measure(model, exclude: list[str] | None = None) -> dict[str, Any]:
    """Per-layer and overall sparsity as stored in the weights (zeros / size)."""
    layers = []
    zeros = total = 0
    for t in prunable_weights(model, exclude):
        w = np.asarray(t.variable.numpy())
        z = int(np.count_nonzero(w == 0))
        layers.append({"layer": t.layer, "weight": t.path, "shape": list(w.shape), "zeros": z, "size": int(w.size),
                       "sparsity": z / w.size})
        zeros += z
        total += w.size
    all_params = sum(int(np.prod(v.shape)) for v in model.weights)
    all_zeros = sum(int(np.count_nonzero(np.asarray(v.numpy()) == 0)) for v in model.weights)
    return {"prunable_sparsity": zeros / total if total else 0.0, "prunable_parameters": int(total),
            "model_sparsity": all_zeros / all_params if all_params else 0.0, "parameters": all_params,
            "layers": layers}


@dataclass
class PruneResult:
    run_dir: Path
    source: Path
    metrics: dict[str, dict[str, float]]
    dense_metrics: dict[str, dict[str, float]]
    sparsity: dict[str, Any]
    sizes: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    weights_sha256: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "source": str(self.source), "metrics": self.metrics,
                "dense_metrics": self.dense_metrics, "sparsity": self.sparsity["pruned_sparsity"],
                "prunable_sparsity": self.sparsity["prunable_sparsity"],
                "sizes": self.sizes, "duration_s": round(self.duration_s, 3), "weights_sha256": self.weights_sha256}


def gzip_size(path: Path) -> int:
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9))


def tflite_gzip_size(model) -> tuple[int, int]:
    """(bytes, gzip bytes) of the model's float32 TFLite conversion."""
    from dlcli.export import Plan
    from dlcli.export.signature import has_recurrent_layers
    from dlcli.export.tflite import convert

    data = convert(model, Plan("none", None, 1 if has_recurrent_layers(model) else None))
    return len(data), len(gzip.compress(data, compresslevel=9))


def prune(run_dir: str | Path, out_dir: str | Path | None = None, *, spec=None, overwrite: bool = False,
          resume: bool = False, reuse: bool = False, progress: str = "plain", console=None, log=None,
          overrides: list[str] | None = None, **options) -> PruneResult:
    """Fine-tune ``run_dir``'s model to the target sparsity, through the one trainer (the
    source recipe's strategy, augmentation, class weights, seeds; resumable). ``options``
    are PruneSpec keys (``sparsity=0.9``, ``scope="layer"``; None leaves the value) laid over
    ``spec``, else the run's ``compress.prune``, and validated by its schema;
    ``overrides`` (``--set KEY=VALUE``) change the source recipe as the stage reads it
    (e.g. ``train.batch_size``, ``train.callbacks.checkpoint.min_interval_seconds``)."""
    from dlcli.rundir import open_run
    from dlcli.train.trainer import prepare_devices, run_stage

    t0 = time.time()
    run = open_run(run_dir, overrides)
    prepare_devices(run.recipe.train)
    spec = _resolve_spec(run, spec, **options)
    out = Path(out_dir) if out_dir else run.path.parent / f"{run.path.name}-pruned"
    if out.resolve() == run.path.resolve():
        raise RunDirError(f"{out}: the pruned run needs its own directory (not the source run)")
    _check_targets(run, spec)
    res = run_stage(prune_stage(run, spec), out, overwrite=overwrite, resume=resume, reuse=reuse,
                    progress=progress, console=console, log=log)
    report = json.loads((out / "sparsity.json").read_text(encoding="utf-8"))  # the chief's (shared storage)
    dense_metrics = json.loads((run.path / "metrics.json").read_text(encoding="utf-8"))
    return PruneResult(out, run.path, res.metrics, dense_metrics, report, report.get("sizes", {}), time.time() - t0,
                       res.weights_digest)


def _resolve_spec(run, spec, **given):
    """The PruneSpec used: ``spec`` (or the run's recipe) with the given arguments on top, validated."""
    from dlcli.recipe.overrides import apply_overrides

    used = apply_overrides(spec or run.recipe.compress.prune_spec(), given)
    if used.learning_rate is None:
        used = used.model_copy(update={"learning_rate": _base_lr(run.recipe.train.optimizer.learning_rate) / 3})
    return used


def _check_targets(run, spec) -> None:
    """Bad --exclude names and nothing to prune are usage errors, found before anything is written."""
    model = run.load_model()
    known = {layer.name for layer in model._flatten_layers(include_self=False)}
    unknown = [e for e in spec.exclude if e not in known]
    if unknown:
        raise UsageError(f"--exclude: no layer named {', '.join(unknown)} (layers: {', '.join(sorted(known))[:200]})")
    if not select_targets(model, spec):
        raise UsageError("nothing to prune: the model has no Dense / Conv / Embedding / recurrent kernels "
                         "outside --exclude")


def select_targets(model, spec) -> list[Target]:
    """The kernels a PruneSpec prunes: prunable and not excluded; of those, the first
    convolution (``keep_first_conv``) and kernels under ``min_size`` weights stay dense,
    unless that would leave nothing to prune (a model made only of small kernels)."""
    targets = prunable_weights(model, spec.exclude)
    kept = targets
    if spec.keep_first_conv:
        first = next((t for t in targets if "Conv" in t.kind), None)
        kept = [t for t in kept if t is not first]
    kept = [t for t in kept if int(np.prod(t.variable.shape)) >= spec.min_size]
    return kept or targets


def prune_stage(run, spec):
    """The pruning stage for the one trainer: the source run's model and data, the source
    recipe's training settings with ``spec``'s epochs and rate; no early stopping or
    best.keras (either would bring back a less sparse epoch)."""
    from dlcli.compress.graph_masks import GraphPruner
    from dlcli.recipe.train import CosineSchedule
    from dlcli.train.stage import Stage, Trainable, compile_like_recipe

    recipe = run.recipe
    pruned_recipe = recipe.model_copy(update={"compress": recipe.compress.model_copy(update={"prune": spec})})
    tr = recipe.train
    callbacks = tr.callbacks.model_copy(update={"early_stopping": None, "reduce_lr_on_plateau": None})
    train = tr.model_copy(update={"epochs": spec.epochs, "callbacks": callbacks})
    # the recipe's optimizer, from a third of the training rate (default) decaying to zero
    rate = CosineSchedule(schedule="cosine", initial=spec.learning_rate)
    optimizer = tr.optimizer.model_copy(update={"learning_rate": rate})

    def build(ctx, steps: int, replicas: int) -> Trainable:
        model = run.load_model()
        compile_like_recipe(model, recipe, ctx, steps, optimizer, train=train)
        model.optimizer.build(model.trainable_variables)
        end = max(1, int(spec.epochs * steps * spec.end_fraction))
        pruner = GraphPruner(select_targets(model, spec), sparsity=spec.sparsity, schedule=spec.schedule,
                             structure=spec.structure, scope=spec.scope, begin=0, end=end, frequency=spec.frequency,
                             initial_sparsity=spec.initial_sparsity, iterations=model.optimizer.iterations)
        return Trainable(model, train_step=pruner.wrap(model.train_step), state=pruner.variables)

    def finish(out: Path, trainable, metrics) -> None:
        _write_sparsity(run, out, spec)

    return Stage("prune", pruned_recipe, build, train=train, preprocessor=run.preprocessor,
                 env={"pruned_from": str(run.path.resolve())}, finish=finish, best_checkpoint=False)


def _write_sparsity(run, out: Path, spec) -> None:
    """sparsity.json: measured on the saved model (not what is in memory), with gzip sizes."""
    saved = run.load_model(out / "model.keras")
    report = measure(saved, spec.exclude)
    pruned = {t.path for t in select_targets(saved, spec)}
    rows = [row for row in report["layers"] if row["weight"] in pruned]
    for row in report["layers"]:
        row["pruned"] = row["weight"] in pruned
    size = sum(r["size"] for r in rows)
    report["pruned_sparsity"] = sum(r["zeros"] for r in rows) / size if size else 0.0
    report.update(target=spec.sparsity, structure=spec.structure, schedule=spec.schedule, scope=spec.scope,
                  epochs=spec.epochs, excluded=spec.exclude, min_size=spec.min_size,
                  keep_first_conv=spec.keep_first_conv)
    sizes = {"model_keras": (out / "model.keras").stat().st_size, "model_keras_gzip": gzip_size(out / "model.keras"),
             "dense_model_keras": run.model_path.stat().st_size, "dense_model_keras_gzip": gzip_size(run.model_path)}
    try:
        sizes["tflite"], sizes["tflite_gzip"] = tflite_gzip_size(saved)
        sizes["dense_tflite"], sizes["dense_tflite_gzip"] = tflite_gzip_size(run.load_model())
    except Exception as exc:  # noqa: BLE001 - sizes are informative; the pruned model stands
        report["tflite_error"] = str(exc).splitlines()[0][:200]
    report["sizes"] = sizes
    write_json(out / "sparsity.json", report)


def _base_lr(lr) -> float:
    return float(lr) if isinstance(lr, float) else float(lr.initial)

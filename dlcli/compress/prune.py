"""``prune(run_dir, ...) -> PruneResult``: fine-tune a trained run while masking its
smallest weights; write a new run directory with a plain Keras model and sparsity.json."""

from __future__ import annotations

import gzip
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.atomic import copy_file, write_json, write_text
from dlcli.compress.masks import global_magnitude_masks, magnitude_mask, n_of_m_mask, polynomial_sparsity
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
        out.append(Target(layer.name, var, axis % len(var.shape)))
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


class Pruner:
    """Holds the masks; ``update(step)`` recomputes them along the schedule, ``apply()``
    zeroes the masked weights (called after every optimizer step)."""

    def __init__(self, targets: list[Target], sparsity: float, schedule: str, structure: str,
                 begin_step: int, end_step: int, frequency: int, initial_sparsity: float, scope: str = "layer"):
        self.targets = targets
        self.scope = scope
        self.final = sparsity
        self.schedule = schedule
        self.structure = structure
        self.begin, self.end, self.frequency = begin_step, end_step, max(1, frequency)
        self.initial = initial_sparsity
        self.masks = [np.ones(t.variable.shape, dtype=np.float32) for t in targets]
        self.current = 0.0

    def sparsity_at(self, step: int) -> float:
        if self.structure == "2:4":
            return 0.5
        if self.schedule == "constant":
            return self.final
        return polynomial_sparsity(step, self.begin, self.end, self.initial, self.final)

    def update(self, step: int, force: bool = False) -> None:
        # every `frequency` steps, and always at the end step: the target is reached there, with
        # the rest of fine-tuning to recover, not forced on at on_train_end with none left
        off_beat = (step - self.begin) % self.frequency and step != self.end
        if not force and (step < self.begin or step > self.end or off_beat):
            return
        s = self.sparsity_at(step)
        if self.structure != "2:4" and self.scope == "global":
            self.masks = global_magnitude_masks([np.asarray(t.variable.numpy()) for t in self.targets], s)
            self.current = s
            return
        for i, t in enumerate(self.targets):
            w = np.asarray(t.variable.numpy())
            if self.structure == "2:4":
                self.masks[i] = n_of_m_mask(w, t.input_axis)
            else:
                self.masks[i] = magnitude_mask(w, s)
        self.current = s

    def apply(self) -> None:
        for t, m in zip(self.targets, self.masks):
            t.variable.assign(t.variable.numpy() * m)


def pruning_callback(pruner: Pruner):
    import keras

    class PruningCallback(keras.callbacks.Callback):
        """Update masks on schedule and re-apply them after every optimizer step."""

        def __init__(self):
            super().__init__()
            self.step = 0

        def on_train_begin(self, logs=None):
            pruner.update(self.step, force=True)
            pruner.apply()

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1
            pruner.update(self.step)
            pruner.apply()

        def on_train_end(self, logs=None):
            pruner.update(self.step, force=True)
            pruner.apply()

    return PruningCallback()


@dataclass
class PruneResult:
    run_dir: Path
    source: Path
    metrics: dict[str, dict[str, float]]
    dense_metrics: dict[str, dict[str, float]]
    sparsity: dict[str, Any]
    sizes: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"run_dir": str(self.run_dir), "source": str(self.source), "metrics": self.metrics,
                "dense_metrics": self.dense_metrics, "sparsity": self.sparsity["prunable_sparsity"],
                "sizes": self.sizes, "duration_s": round(self.duration_s, 3)}


def gzip_size(path: Path) -> int:
    return len(gzip.compress(Path(path).read_bytes(), compresslevel=9))


def tflite_gzip_size(model) -> tuple[int, int]:
    """(bytes, gzip bytes) of the model's float32 TFLite conversion."""
    from dlcli.export import Plan
    from dlcli.export.signature import has_recurrent_layers
    from dlcli.export.tflite import convert

    data = convert(model, Plan("none", None, 1 if has_recurrent_layers(model) else None))
    return len(data), len(gzip.compress(data, compresslevel=9))


def prune(run_dir: str | Path, out_dir: str | Path | None = None, *, sparsity: float | None = None,
          schedule: str | None = None, structure: str | None = None, epochs: int | None = None,
          exclude: list[str] | None = None, learning_rate: float | None = None, overwrite: bool = False,
          scope: str | None = None, spec=None, progress: str = "plain") -> PruneResult:
    """Fine-tune ``run_dir``'s model to the target sparsity. Unset arguments come from
    ``spec`` (a PruneSpec), else from the run's recipe ``compress.prune`` section."""
    from dlcli.inspect import open_run

    t0 = time.time()
    run = open_run(run_dir)
    spec = spec or run.recipe.compress.prune_spec()
    sparsity = spec.sparsity if sparsity is None else sparsity
    structure = structure or spec.structure
    if not 0.0 <= sparsity < 1.0:
        raise UsageError(f"--sparsity {sparsity}: expected a value in [0, 1)")
    if structure not in ("unstructured", "2:4"):
        raise UsageError(f"--structure {structure!r}: expected unstructured or 2:4")
    schedule = schedule or spec.schedule
    if schedule not in ("constant", "polynomial"):
        raise UsageError(f"--schedule {schedule!r}: expected constant or polynomial")
    epochs = epochs or spec.epochs
    scope = scope or spec.scope
    if scope not in ("layer", "global"):
        raise UsageError(f"--scope {scope!r}: expected layer or global")
    exclude = list(exclude if exclude is not None else spec.exclude)
    out = Path(out_dir) if out_dir else run.path.parent / f"{run.path.name}-pruned"
    if out.resolve() == run.path.resolve():
        raise RunDirError(f"{out}: the pruned run needs its own directory (not the source run)")
    return _prune(run, out, sparsity, schedule, structure, epochs, exclude,
                  learning_rate or spec.learning_rate, spec, overwrite, progress, t0, scope)


def _prune(run, out: Path, sparsity, schedule, structure, epochs, exclude, learning_rate, spec, overwrite,
           progress, t0, scope) -> PruneResult:
    import keras

    from dlcli.data.pipeline import make_dataset
    from dlcli.evaluate import evaluate_splits
    from dlcli.inspect import run_split
    from dlcli.recipe.loader import recipe_hash, recipe_to_yaml
    from dlcli.runs import environment, prepare_run_dir
    from dlcli.train import callbacks as cb
    from dlcli.train.optim import make_loss, make_metrics, needs_one_hot
    from dlcli.train.trainer import seed_everything

    recipe = run.recipe
    out = prepare_run_dir(out, overwrite=overwrite)
    write_text(out / "recipe.yaml", recipe_to_yaml(recipe))  # run markers first: an interrupted prune
    write_json(out / "env.json", {"status": "running", "pruned_from": str(run.path.resolve())})  # stays a run
    keras.backend.clear_session()
    seed_everything(recipe.seed, recipe.train.deterministic)
    model = run.load_model()
    targets = prunable_weights(model, exclude)
    if not targets:
        raise UsageError("nothing to prune: the model has no Dense / Conv / Embedding / recurrent kernels "
                         "outside --exclude")
    known = {layer.name for layer in model._flatten_layers(include_self=False)}
    unknown = [e for e in exclude if e not in known]
    if unknown:
        raise UsageError(f"--exclude: no layer named {', '.join(unknown)} (layers: {', '.join(sorted(known))[:200]})")

    splits = {s: run_split(run, s) for s in run.split_names()}
    tr = recipe.train
    one_hot = needs_one_hot(tr.loss, recipe.task, tr.metrics)
    k = len(run.preprocessor.labels or [])

    def labels(y):
        return np.eye(k, dtype=np.float32)[y.astype(np.int64)] if one_hot else y

    x_train, y_train = splits["train"]
    steps = math.ceil(len(x_train) / tr.batch_size)
    total = max(1, epochs * steps)
    end = max(1, int(total * spec.end_fraction))
    pruner = Pruner(targets, sparsity, schedule, structure, 0, end, spec.frequency, spec.initial_sparsity,
                    scope)
    dense_metrics = evaluate_splits(model, splits, tr.batch_size, labels)
    lr = learning_rate if learning_rate is not None else _base_lr(tr.optimizer.learning_rate) / 3
    opt_cls = type(model.optimizer) if getattr(model, "optimizer", None) is not None else keras.optimizers.Adam
    model.compile(optimizer=opt_cls(learning_rate=lr), loss=make_loss(tr.loss, recipe.task, k, one_hot),
                  metrics=make_metrics(tr.metrics, recipe.task))
    train_ds = make_dataset(x_train, labels(y_train), tr.batch_size, training=True, seed=recipe.seed)
    val = splits.get("validation")
    val_ds = make_dataset(val[0], labels(val[1]), tr.batch_size, training=False) if val else None
    callbacks = [pruning_callback(pruner), cb.HistoryCSV(out / "history.csv")]
    if progress == "plain":
        callbacks.append(cb.PlainProgress(epochs))
    model.fit(train_ds, validation_data=val_ds, epochs=epochs, callbacks=callbacks, verbose=0, shuffle=False)
    pruner.apply()

    metrics = evaluate_splits(model, splits, tr.batch_size, labels)
    cb.save_model_atomic(model, out / "model.keras")
    saved = run.load_model(out / "model.keras")  # measure what was saved, not what is in memory
    report = measure(saved, exclude)
    report.update(target=sparsity, structure=structure, schedule=schedule, scope=scope, epochs=epochs,
                  excluded=exclude)
    sizes = {"model_keras": (out / "model.keras").stat().st_size, "model_keras_gzip": gzip_size(out / "model.keras"),
             "dense_model_keras": run.model_path.stat().st_size, "dense_model_keras_gzip": gzip_size(run.model_path)}
    try:
        sizes["tflite"], sizes["tflite_gzip"] = tflite_gzip_size(saved)
        sizes["dense_tflite"], sizes["dense_tflite_gzip"] = tflite_gzip_size(run.load_model())
    except Exception as exc:  # noqa: BLE001 - sizes are informative; the pruned model stands
        report["tflite_error"] = str(exc).splitlines()[0][:200]
    report["sizes"] = sizes
    write_json(out / "sparsity.json", report)
    write_json(out / "metrics.json", metrics)
    for name in ("preprocessing.json", "labels.txt"):
        if (run.path / name).exists():
            copy_file(run.path / name, out / name)
    # the pruned run's recipe: the source recipe with the prune settings used; written and hashed as one
    used = spec.model_copy(update={"sparsity": sparsity, "schedule": schedule, "structure": structure,
                                   "scope": scope, "epochs": epochs, "exclude": exclude, "learning_rate": lr})
    pruned_recipe = recipe.model_copy(update={"compress": recipe.compress.model_copy(update={"prune": used})})
    write_text(out / "recipe.yaml", recipe_to_yaml(pruned_recipe))
    env = dict(run.env)
    env.update(environment())
    env.update(status="completed", pruned_from=str(run.path.resolve()), recipe_hash=recipe_hash(pruned_recipe),
               ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    write_json(out / "env.json", env)
    return PruneResult(out, run.path, metrics, dense_metrics, report, sizes, time.time() - t0)


def _base_lr(lr) -> float:
    return float(lr) if isinstance(lr, float) else float(lr.initial)

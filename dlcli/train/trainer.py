"""``train(recipe) -> TrainResult``: data, model, fit, evaluate, and a complete run directory.

Run directory layout (every file written atomically):

    model.keras          trained model (best weights when early stopping restores them)
    recipe.yaml          the resolved recipe (defaults filled, overrides applied)
    preprocessing.json   fitted preprocessing (normalization stats, vocabularies, labels)
    labels.txt           class names, one per line (classification)
    metrics.json         final train / validation / test metrics by Keras metric name
    history.csv          per-epoch metrics and learning rate
    env.json             versions, seed, data fingerprint, recipe hash, devices, times, status
    checkpoints/         last.keras (last finite epoch), best.keras (best monitored epoch)
    tensorboard/         TensorBoard logs
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.atomic import write_json, write_text
from dlcli.data import DataBundle, load_data
from dlcli.errors import DlcliError, TrainingDivergedError
from dlcli.recipe.loader import recipe_hash, recipe_to_yaml
from dlcli.runs import default_run_dir, environment, prepare_run_dir


@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, dict[str, float]]
    duration_s: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    samples_per_second: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "metrics": self.metrics,
            "duration_s": round(self.duration_s, 3),
            "epochs": self.epochs_run,
            "samples_per_second": round(self.samples_per_second, 1),
        }


def seed_everything(seed: int, deterministic: bool) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def _labels(bundle: DataBundle, split: str, one_hot: bool) -> np.ndarray:
    y = bundle.splits[split].y
    if one_hot:
        return np.eye(bundle.num_classes, dtype=np.float32)[y.astype(np.int64)]
    return y


def _evaluate(model, bundle: DataBundle, batch_size: int, one_hot: bool) -> dict[str, dict[str, float]]:
    from dlcli.evaluate import evaluate_splits

    splits = {name: (bundle.splits[name].x, _labels(bundle, name, one_hot)) for name in bundle.splits}
    return evaluate_splits(model, splits, batch_size)


def train(recipe, run_dir: str | Path | None = None, *, overwrite: bool = False, allow_code: bool = False,
          progress: str = "plain", console=None, runs_root: str | Path = "runs") -> TrainResult:
    """Train ``recipe`` into ``run_dir``. ``progress``: rich, plain or none (all on stderr)."""
    started = time.time()
    run_dir = prepare_run_dir(run_dir or default_run_dir(recipe.name, runs_root), overwrite=overwrite)
    env: dict[str, Any] = {"status": "running", "started": _iso(started), "seed": recipe.seed,
                           "recipe_hash": recipe_hash(recipe)}
    write_text(run_dir / "recipe.yaml", recipe_to_yaml(recipe))
    write_json(run_dir / "env.json", env)
    try:
        result = _train(recipe, run_dir, env, allow_code, progress, console)
    except DlcliError as exc:
        if env.get("status") != "interrupted":
            env.update(status="failed" if not isinstance(exc, TrainingDivergedError) else "diverged",
                       error=str(exc), ended=_iso(time.time()))
            write_json(run_dir / "env.json", env)
        raise
    except BaseException as exc:
        env.update(status="failed", error=f"{type(exc).__name__}: {exc}", ended=_iso(time.time()))
        write_json(run_dir / "env.json", env)
        raise
    return result


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def _train(recipe, run_dir: Path, env: dict, allow_code: bool, progress: str, console) -> TrainResult:
    t0 = time.time()
    if recipe.train.cpu_devices:
        from dlcli.distribute import split_cpu

        split_cpu(recipe.train.cpu_devices)  # before anything initialises TensorFlow's runtime
    bundle = load_data(recipe)
    env["data_fingerprint"] = bundle.fingerprint
    env["data_sizes"] = bundle.sizes

    import keras
    import tensorflow as tf

    from dlcli.data.pipeline import build_augmenter, make_dataset
    from dlcli.distribute import make_strategy, resolve
    from dlcli.models import build_model, context_from_data
    from dlcli.train import callbacks as cb
    from dlcli.train.optim import make_loss, make_metrics, make_optimizer, needs_one_hot

    tr = recipe.train
    keras.backend.clear_session()
    seed_everything(recipe.seed, tr.deterministic)
    policy = "float32" if tr.mixed_precision == "none" else tr.mixed_precision
    keras.mixed_precision.set_dtype_policy(policy)
    resolution = resolve(tr.strategy, gpus=len(tf.config.list_physical_devices("GPU")), tpu=tr.tpu)
    strategy = make_strategy(resolution.name, tr.tpu)
    replicas = int(strategy.num_replicas_in_sync)
    env["strategy"] = {"name": resolution.name, "reason": resolution.reason, "replicas": replicas}
    try:
        ctx = context_from_data(recipe, bundle)
        n_train = len(bundle.train)
        steps = tr.steps_per_epoch or math.ceil(n_train / tr.batch_size)
        one_hot = needs_one_hot(tr.loss, recipe.task, tr.metrics)
        opt_spec = tr.optimizer
        if tr.scale_learning_rate and replicas > 1:
            lr = opt_spec.learning_rate
            lr = lr * replicas if isinstance(lr, float) else lr.model_copy(update={"initial": lr.initial * replicas})
            opt_spec = opt_spec.model_copy(update={"learning_rate": lr})
        with strategy.scope():
            model = build_model(recipe, ctx, allow_code=allow_code)
            model.compile(
                optimizer=make_optimizer(opt_spec, steps, tr.epochs),
                loss=make_loss(tr.loss, recipe.task, ctx.num_outputs, one_hot),
                metrics=make_metrics(tr.metrics, recipe.task),
                jit_compile=tr.jit_compile,
            )
        train_x = bundle.train.x
        aug = build_augmenter(recipe.data.augment, ctx.input_shape,
                              (float(train_x.min()), float(train_x.max())), recipe.seed)
        train_ds = make_dataset(train_x, _labels(bundle, "train", one_hot), tr.batch_size, training=True,
                                pipeline=recipe.data.pipeline, augment=aug, seed=recipe.seed)
        val_ds = None
        if "validation" in bundle.splits:
            val_ds = make_dataset(bundle.splits["validation"].x, _labels(bundle, "validation", one_hot),
                                  tr.batch_size, training=False, pipeline=recipe.data.pipeline)

        cbs = _callbacks(recipe, run_dir, steps, progress, console, has_val=val_ds is not None)
        guard = next(c for c in cbs if isinstance(c, cb.DivergenceGuard))
        history = keras.callbacks.History()
        stopper = cb.StopOnSignal()
        fit_start = time.perf_counter()
        with _signals_to(stopper.handler):
            model.fit(train_ds, validation_data=val_ds, epochs=tr.epochs, steps_per_epoch=tr.steps_per_epoch,
                      class_weight=bundle.class_weight, callbacks=[stopper, *cbs, history], verbose=0, shuffle=False)
        fit_time = time.perf_counter() - fit_start
        epochs_run = len(history.epoch)
        if stopper.signal is not None:
            import signal as _signal

            from dlcli.atomic import write_json as _wj
            from dlcli.errors import TrainingInterrupted

            cb.save_model_atomic(model, run_dir / "checkpoints" / "last.keras")
            state = {"interrupted": True, "signal": _signal.Signals(stopper.signal).name,
                     "epoch": stopper.epoch + 1, "step_in_epoch": stopper.step,
                     "optimizer_iterations": int(model.optimizer.iterations.numpy())}
            _wj(run_dir / "checkpoints" / "state.json", state)
            env.update(status="interrupted", interrupted=state, ended=_iso(time.time()))
            write_json(run_dir / "env.json", env)
            raise TrainingInterrupted(
                f"{state['signal']} at epoch {state['epoch']}, step {state['step_in_epoch']}: the step finished "
                f"and {run_dir / 'checkpoints' / 'last.keras'} was written")
        if guard.diverged_at is not None:
            epoch, batch = guard.diverged_at
            last = run_dir / "checkpoints" / "last.keras"
            kept = f"last good checkpoint kept: {last}" if last.exists() else "no epoch finished cleanly, so no checkpoint"
            where = f"epoch {epoch}" + (f", step {batch}" if batch else "")
            raise TrainingDivergedError(
                f"loss became NaN or inf at {where}; {kept} (lower train.optimizer.learning_rate or add clipnorm)"
            )

        metrics = _evaluate(model, bundle, tr.batch_size, one_hot)
        if not all(math.isfinite(v) for m in metrics.values() for v in m.values()):
            raise TrainingDivergedError(f"final metrics are not finite: {metrics}")
        cb.save_model_atomic(model, run_dir / "model.keras")
        bundle.preprocessor.save(run_dir / "preprocessing.json")
        if bundle.preprocessor.labels:
            write_text(run_dir / "labels.txt", "\n".join(bundle.preprocessor.labels) + "\n")
        write_json(run_dir / "metrics.json", metrics)
        steps_done = tr.steps_per_epoch * epochs_run if tr.steps_per_epoch else None
        samples = (steps_done * tr.batch_size) if steps_done else n_train * epochs_run
        sps = samples / fit_time if fit_time > 0 else 0.0
        env.update(environment())
        env.update(status="completed", ended=_iso(time.time()), epochs_run=epochs_run,
                   fit_seconds=round(fit_time, 3), samples_per_second=round(sps, 1),
                   parameters=int(model.count_params()), mixed_precision=policy,
                   jit_compile=bool(getattr(model, "jit_compile", False)))
        write_json(run_dir / "env.json", env)
        hist = [{"epoch": e + 1, **{k: float(v[e]) for k, v in history.history.items()}} for e in history.epoch]
        return TrainResult(run_dir, metrics, time.time() - t0, epochs_run, hist, sps)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


class _signals_to:
    """Route SIGTERM and SIGINT to ``handler`` while training (main thread only)."""

    def __init__(self, handler):
        self.handler = handler
        self.saved: dict = {}

    def __enter__(self):
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.saved[sig] = signal.signal(sig, self.handler)
        return self

    def __exit__(self, *exc):
        import signal

        for sig, old in self.saved.items():
            signal.signal(sig, old)
        return False


def _callbacks(recipe, run_dir: Path, steps: int, progress: str, console, has_val: bool) -> list:
    import keras

    from dlcli.train import callbacks as cb

    c = recipe.train.callbacks
    out: list = [cb.DivergenceGuard(per_batch=c.terminate_on_nan)]

    def monitor(name: str) -> str:
        if name.startswith("val_") and not has_val:
            return name[4:]
        return name

    if c.early_stopping:
        es = c.early_stopping
        out.append(keras.callbacks.EarlyStopping(
            monitor=monitor(es.monitor), patience=es.patience, min_delta=es.min_delta, mode=es.mode,
            restore_best_weights=es.restore_best_weights, verbose=0))
    if c.reduce_lr_on_plateau:
        r = c.reduce_lr_on_plateau
        out.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor(r.monitor), factor=r.factor,
                                                     patience=r.patience, min_lr=r.min_lr, verbose=0))
    ck = c.checkpoint
    out.append(cb.Checkpoints(run_dir / "checkpoints", monitor(ck.monitor) if ck else None,
                              ck.mode if ck else "auto", ck.min_interval_seconds if ck else 30.0))
    if c.csv_history:
        out.append(cb.HistoryCSV(run_dir / "history.csv"))
    if c.tensorboard:
        out.append(cb.EpochTensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False, profile_batch=0))
    if progress == "rich":
        out.append(cb.RichProgress(recipe.train.epochs, recipe.train.steps_per_epoch or steps, console))
    elif progress == "plain":
        out.append(cb.PlainProgress(recipe.train.epochs))
    return out

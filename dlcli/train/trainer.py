"""``train(recipe) -> TrainResult``: data, model, fit, evaluate, and a complete run directory.

Run directory layout (every file written atomically):

    model.keras          trained model (best weights when early stopping restores them)
    recipe.yaml          the resolved recipe (defaults filled, overrides applied)
    preprocessing.json   fitted preprocessing (normalization stats, vocabularies, labels)
    labels.txt           class names, one per line (classification)
    metrics.json         final train / validation / test metrics by Keras metric name
    history.csv          per-epoch metrics and learning rate
    env.json             versions, seed, data fingerprint, recipe hash, devices, times, status
    checkpoints/         resume/ckpt-E*-S*/ (resumable state), last.keras (its model), best.keras
    tensorboard/         TensorBoard logs
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.atomic import write_json, write_text
from dlcli.data import DataBundle, load_data
from dlcli.errors import DlcliError, RunDirError, TrainingDivergedError, UsageError, WorkerLostError
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
    chief: bool = True  # False on a multi-worker run's other workers, which write nothing
    weights_digest: str = ""  # sha256 of the final weights (the same on every worker)

    def to_json(self) -> dict[str, Any]:
        return {
            "run_dir": str(self.run_dir),
            "chief": self.chief,
            "weights_sha256": self.weights_digest,
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


def train(recipe, run_dir: str | Path | None = None, *, overwrite: bool = False, resume: bool = False,
          allow_code: bool = False, progress: str = "plain", console=None, runs_root: str | Path = "runs",
          log=None) -> TrainResult:
    """Train ``recipe`` into ``run_dir``. ``progress``: rich, plain or none (all on stderr).

    ``resume``: continue the interrupted run in ``run_dir`` from its last checkpoint. Without
    it, a ``run_dir`` that holds an interrupted (or killed) run of the same recipe is resumed
    too; one of a different recipe is refused. In a multi-worker run only the chief writes
    ``run_dir``; the other workers read its checkpoint when resuming (shared storage).
    """
    from dlcli.distribute import cluster_role, resolve

    started = time.time()
    log = log or (lambda msg: None)
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other: pick one")
    if resume and run_dir is None:
        raise UsageError("--resume needs --run-dir (the run to continue)")
    role = cluster_role() if resolve(recipe.train.strategy, gpus=0, tpu=recipe.train.tpu).name == "multi_worker" \
        else None
    chief = role is None or role.chief
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(recipe.name, runs_root)
    checkpoint, previous = None, None
    if run_dir.exists() and not overwrite:
        previous, checkpoint = _resumable(recipe, run_dir, explicit=resume, chief=chief)
    if previous is None and chief:  # a worker other than the chief writes nothing in the run directory
        prepare_run_dir(run_dir, overwrite=overwrite)
    env: dict[str, Any] = {"status": "running", "started": _iso(started), "seed": recipe.seed,
                           "recipe_hash": recipe_hash(recipe)}
    if previous is not None:
        env = {**previous, "status": "running"}
        env.pop("error", None)
        env.pop("interrupted", None)
        at = {"at": _iso(started), "epoch": checkpoint.epoch + 1 if checkpoint else 1,
              "step": checkpoint.step if checkpoint else 0}
        env["resumed"] = [*previous.get("resumed", []), at]
        log(f"resuming {run_dir} at epoch {at['epoch']}, step {at['step']}" if checkpoint
            else f"{run_dir} holds no checkpoint yet: starting it again from the beginning")
    env.update(host=platform.node(), pid=os.getpid())
    if chief:
        if previous is None:
            write_text(run_dir / "recipe.yaml", recipe_to_yaml(recipe))
        write_json(run_dir / "env.json", env)
    try:
        result = _train(recipe, run_dir, env, allow_code, progress, console, checkpoint, role)
    except DlcliError as exc:
        if chief and env.get("status") != "interrupted":
            status = "diverged" if isinstance(exc, TrainingDivergedError) else "failed"
            env.update(status=status, error=str(exc), ended=_iso(time.time()))
            write_json(run_dir / "env.json", env)
        raise
    except BaseException as exc:
        if chief:
            env.update(status="failed", error=f"{type(exc).__name__}: {exc}", ended=_iso(time.time()))
            write_json(run_dir / "env.json", env)
        raise
    return result


# where the run happens rather than what it trains: a resume may change them
_WHERE = ("strategy", "tpu", "cpu_devices", "worker_timeout_seconds")


def resume_key(recipe) -> str:
    """The recipe's hash without the settings that only say where it runs."""
    data = recipe.model_dump(mode="json")
    for key in _WHERE:
        data["train"].pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def _resumable(recipe, run_dir: Path, *, explicit: bool, chief: bool):
    """``(env, checkpoint)`` when ``run_dir`` holds a run to continue, ``(None, None)`` when it
    holds nothing; refuses a run of another recipe, a finished one, or one still running."""
    from dlcli.recipe.loader import load_recipe
    from dlcli.train import resume as ckpt

    env_path = run_dir / "env.json"
    if not env_path.exists():
        if explicit:
            raise RunDirError(f"{run_dir}: no interrupted run to resume (no env.json)")
        return None, None
    try:
        env = json.loads(env_path.read_text(encoding="utf-8"))
        saved = load_recipe(run_dir / "recipe.yaml")
    except (OSError, ValueError, DlcliError) as exc:
        raise RunDirError(f"{run_dir}: cannot read the run to resume: {exc}") from None
    status = env.get("status")
    if status == "running" and chief and _alive(env):  # other workers read what the chief writes
        raise RunDirError(f"{run_dir}: another dlcli process (pid {env['pid']} on {env.get('host')}) "
                          "is training into it")
    if status == "completed" or (status not in ("running", "interrupted", "failed") and not explicit):
        if explicit:
            raise RunDirError(f"{run_dir}: the run {status}; there is nothing to resume")
        return None, None  # prepare_run_dir refuses it (or --overwrite replaces it)
    if resume_key(saved) != resume_key(recipe):
        diff = ", ".join(_differences(saved.model_dump(mode="json"), recipe.model_dump(mode="json"))[:5])
        raise RunDirError(f"{run_dir}: holds an interrupted run of a different recipe ({diff}); "
                          "resume it with the same recipe, or pass --overwrite / another --run-dir to start over")
    if chief:
        ckpt.clear_partial(run_dir / "checkpoints")
    return env, ckpt.latest(run_dir / "checkpoints")


def _alive(env: dict) -> bool:
    if env.get("host") != platform.node() or not isinstance(env.get("pid"), int):
        return False
    if env["pid"] == os.getpid():
        return False
    try:
        os.kill(env["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _differences(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if prefix == "train." and k in _WHERE:
                continue
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


def _iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def _train(recipe, run_dir: Path, env: dict, allow_code: bool, progress: str, console, checkpoint,
           role) -> TrainResult:
    t0 = time.time()
    if recipe.train.cpu_devices:
        from dlcli.distribute import split_cpu

        split_cpu(recipe.train.cpu_devices)  # before anything initialises TensorFlow's runtime
    bundle = load_data(recipe)
    if checkpoint is not None and checkpoint.state.get("data_fingerprint") not in (None, bundle.fingerprint):
        raise RunDirError(f"{run_dir}: the data changed since the run was interrupted (fingerprint "
                          f"{checkpoint.state['data_fingerprint'][:12]} -> {bundle.fingerprint[:12]}); "
                          "resuming would mix two data sets: pass --overwrite to start over")
    env["data_fingerprint"] = bundle.fingerprint
    env["data_sizes"] = bundle.sizes

    import keras
    import tensorflow as tf

    from dlcli.data.pipeline import EpochData, build_augmenter, make_dataset
    from dlcli.distribute import make_strategy, resolve
    from dlcli.models import build_model, context_from_data
    from dlcli.train import callbacks as cb
    from dlcli.train import resume as ckpt
    from dlcli.train.loop import TrainLoop
    from dlcli.train.optim import make_loss, make_metrics, make_optimizer, needs_one_hot

    tr = recipe.train
    resolution = resolve(tr.strategy, gpus=len(tf.config.list_physical_devices("GPU")), tpu=tr.tpu)
    # first: multi-worker must configure the runtime before any other TensorFlow op runs
    strategy = make_strategy(resolution.name, tr.tpu, worker_timeout=tr.worker_timeout_seconds)
    chief = role is None or role.chief
    keras.backend.clear_session()
    seed_everything(recipe.seed, tr.deterministic)
    policy = "float32" if tr.mixed_precision == "none" else tr.mixed_precision
    keras.mixed_precision.set_dtype_policy(policy)
    replicas = int(strategy.num_replicas_in_sync)
    env["strategy"] = {"name": resolution.name, "reason": resolution.reason, "replicas": replicas}
    if role is not None:
        env["strategy"].update(workers=role.workers, task=f"{role.task_type}:{role.task_id}")
    try:
        ctx = context_from_data(recipe, bundle)
        one_hot = needs_one_hot(tr.loss, recipe.task, tr.metrics)
        opt_spec = tr.optimizer
        if tr.scale_learning_rate and replicas > 1:
            lr = opt_spec.learning_rate
            lr = lr * replicas if isinstance(lr, float) else lr.model_copy(update={"initial": lr.initial * replicas})
            opt_spec = opt_spec.model_copy(update={"learning_rate": lr})
        train_x, train_y = bundle.train.x, _labels(bundle, "train", one_hot)
        value_range = (float(train_x.min()), float(train_x.max()))
        make_augment = None
        if recipe.data.augment.enabled():
            def make_augment(seed):
                return build_augmenter(recipe.data.augment, ctx.input_shape, value_range, seed)
        weights = None
        if bundle.class_weight:
            weights = np.array([bundle.class_weight.get(int(c), 1.0) for c in bundle.train.y], dtype=np.float32)
        data = EpochData(train_x, train_y, tr.batch_size, pipeline=recipe.data.pipeline, seed=recipe.seed,
                         make_augment=make_augment, sample_weight=weights, steps=tr.steps_per_epoch)
        steps = data.steps_per_epoch
        with strategy.scope():
            model = build_model(recipe, ctx, allow_code=allow_code)
            model.compile(
                optimizer=make_optimizer(opt_spec, steps, tr.epochs),
                loss=make_loss(tr.loss, recipe.task, ctx.num_outputs, one_hot),
                metrics=make_metrics(tr.metrics, recipe.task),
                jit_compile=tr.jit_compile,
            )
        val_ds = None
        if "validation" in bundle.splits:
            val_ds = make_dataset(bundle.splits["validation"].x, _labels(bundle, "validation", one_hot),
                                  tr.batch_size, training=False, pipeline=recipe.data.pipeline)

        cbs = _callbacks(recipe, run_dir, steps, progress if chief else "none", console,
                         has_val=val_ds is not None, writes=chief)
        guard = next(c for c in cbs if isinstance(c, cb.DivergenceGuard))
        best = next((c for c in cbs if isinstance(c, cb.Checkpoints)), None)
        folder = run_dir / "checkpoints"

        def write_snapshot(snap, live):
            ckpt.write(folder, snap, lambda path: _save_model_as(loop, snap if not live else None, path))
            if best is not None:
                best.flush()

        flag = cb.SignalFlag()
        interval = tr.callbacks.checkpoint.min_interval_seconds if tr.callbacks.checkpoint else 30.0
        loop = TrainLoop(model, strategy, data, epochs=tr.epochs, callbacks=cbs, val_ds=val_ds, is_chief=chief,
                         multi_worker=role is not None, checkpoint_interval=interval, write_snapshot=write_snapshot,
                         signal_flag=flag, base_state=lambda: {"recipe_hash": env["recipe_hash"],
                                                               "data_fingerprint": bundle.fingerprint})
        loop.build(data.base.batch(tr.batch_size).take(1).get_single_element())
        snap = None
        if checkpoint is not None:
            from dlcli.train.resume import Snapshot

            snap = Snapshot(checkpoint.epoch, checkpoint.step, checkpoint.arrays(), checkpoint.state)
        with _signals_to(flag.handler):
            result = _run_loop(loop, snap, role, run_dir)
        epochs_run = result.epochs_run
        if result.stop == "signal":
            import signal as _signal

            from dlcli.errors import TrainingInterrupted

            latest = ckpt.latest(folder)
            state = {"signal": _signal.Signals(flag.signal).name, "epoch": result.epoch + 1,
                     "step_in_epoch": result.step, "optimizer_iterations": int(model.optimizer.iterations.numpy())}
            if chief:
                env.update(status="interrupted", interrupted=state, ended=_iso(time.time()))
                write_json(run_dir / "env.json", env)
            kept = f"{folder / 'last.keras'} was written" if latest else "no checkpoint could be written"
            raise TrainingInterrupted(
                f"{state['signal']} at epoch {state['epoch']}, step {state['step_in_epoch']}: the step finished "
                f"and {kept}; continue with --resume")
        if guard.diverged_at is not None or result.stop == "diverged":
            epoch, batch = guard.diverged_at or (result.epoch + 1, None)
            last = folder / "last.keras"
            kept = f"last good checkpoint kept: {last}" if last.exists() else "no epoch finished cleanly, so no checkpoint"
            where = f"epoch {epoch}" + (f", step {batch}" if batch else "")
            raise TrainingDivergedError(
                f"loss became NaN or inf at {where}; {kept} (lower train.optimizer.learning_rate or add clipnorm)"
            )

        splits = {name: make_dataset(bundle.splits[name].x, _labels(bundle, name, one_hot), tr.batch_size,
                                     training=False) for name in bundle.splits}
        metrics = {name: loop.evaluate(ds) for name, ds in splits.items()}
        if not all(math.isfinite(v) for m in metrics.values() for v in m.values()):
            raise TrainingDivergedError(f"final metrics are not finite: {metrics}")
        sps = result.samples / result.fit_seconds if result.fit_seconds > 0 else 0.0
        fit_seconds = result.fit_seconds + float(snap.state.get("fit_seconds", 0.0) if snap else 0.0)
        if chief:
            cb.save_model_atomic(model, run_dir / "model.keras")
            bundle.preprocessor.save(run_dir / "preprocessing.json")
            if bundle.preprocessor.labels:
                write_text(run_dir / "labels.txt", "\n".join(bundle.preprocessor.labels) + "\n")
            write_json(run_dir / "metrics.json", metrics)
            env.update(environment())
            env.update(status="completed", ended=_iso(time.time()), epochs_run=epochs_run,
                       fit_seconds=round(fit_seconds, 3), samples_per_second=round(sps, 1),
                       parameters=int(model.count_params()), mixed_precision=policy,
                       jit_compile=bool(getattr(model, "jit_compile", False)))
            write_json(run_dir / "env.json", env)
        history = loop.history
        hist = [{"epoch": e + 1, **{k: float(v[i]) for k, v in history.history.items()}}
                for i, e in enumerate(history.epoch)]
        return TrainResult(run_dir, metrics, time.time() - t0, epochs_run, hist, sps,
                           chief=chief, weights_digest=_digest(model))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


def _run_loop(loop, snap, role, run_dir: Path):
    """``loop.run``; in a multi-worker run, a lost peer becomes one clear error."""
    if role is None:
        return loop.run(snap)
    import tensorflow as tf

    try:
        return loop.run(snap)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
            tf.errors.CancelledError, tf.errors.InternalError) as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise WorkerLostError(
            f"a worker of the {role.workers}-worker cluster stopped responding ({type(exc).__name__}: {first[:160]}); "
            f"this worker ({role.task_type} {role.task_id}) stopped too. Restart every worker with "
            f"--resume --run-dir {run_dir} to continue from the last checkpoint") from None


def _save_model_as(loop, snap, path: Path) -> None:
    """Save the model, with the values of ``snap`` when given (the live model is ahead of it)."""
    from dlcli.train.resume import Snapshot

    if snap is None:
        loop.model.save(path)
        return
    current = Snapshot(snap.epoch, snap.step, loop.host_copy(), {})
    loop.restore(snap, groups=("model", "optimizer"), callbacks=False)
    try:
        loop.model.save(path)
    finally:
        loop.restore(current, groups=("model", "optimizer"), callbacks=False)


def _digest(model) -> str:
    h = hashlib.sha256()
    for v in model.weights:
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()


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


def _callbacks(recipe, run_dir: Path, steps: int, progress: str, console, has_val: bool, writes: bool = True) -> list:
    """The recipe's callbacks; ``writes=False`` (a worker other than the chief) leaves out
    every one that writes files or prints."""
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
    if not writes:
        return out
    ck = c.checkpoint
    if ck:
        out.append(cb.Checkpoints(run_dir / "checkpoints", monitor(ck.monitor), ck.mode))
    if c.csv_history:
        out.append(cb.HistoryCSV(run_dir / "history.csv"))
    if c.tensorboard:
        out.append(cb.EpochTensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False, profile_batch=0))
    if progress == "rich":
        out.append(cb.RichProgress(recipe.train.epochs, recipe.train.steps_per_epoch or steps, console))
    elif progress == "plain":
        out.append(cb.PlainProgress(recipe.train.epochs))
    return out

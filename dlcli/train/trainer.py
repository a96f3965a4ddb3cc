"""The one trainer: ``train(recipe)`` and ``run_stage(stage)`` -> a complete run directory.

Every training stage (training, pruning, distillation, a student-alone baseline) is a
:class:`~dlcli.train.stage.Stage` run here, through the same
:class:`~dlcli.train.loop.TrainLoop`. ``train(recipe)`` then runs the recipe's
``compress:`` and ``export:`` stages (:mod:`dlcli.pipeline`).

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
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.atomic import write_json, write_text
from dlcli.data import DataBundle, load_data
from dlcli.errors import DlcliError, RunDirError, TrainingDivergedError, UsageError
from dlcli.recipe.loader import recipe_hash, recipe_to_yaml
from dlcli.rundir import RUN_FORMAT, default_run_dir, environment, finalize, prepare_run_dir
from dlcli.train.policy import COMPLETED, resumable, signals_to
from dlcli.train.stage import Stage, model_stage
from dlcli.train.stops import data_errors, raise_if_stopped, run_loop
from dlcli.train.stops import iso_time as _iso


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
    pipeline: Any = None  # the compress / export stages that followed (dlcli.pipeline.PipelineResult)
    kept_epoch: int | None = None  # early stopping restored the weights of this epoch (1-based)

    def to_json(self) -> dict[str, Any]:
        out = {
            "run_dir": str(self.run_dir),
            "chief": self.chief,
            "weights_sha256": self.weights_digest,
            "metrics": self.metrics,
            "duration_s": round(self.duration_s, 3),
            "epochs": self.epochs_run,
            "samples_per_second": round(self.samples_per_second, 1),
        }
        if self.kept_epoch is not None:
            out["kept_epoch"] = self.kept_epoch
        if self.pipeline is not None:
            out["pipeline"] = self.pipeline.to_json()
        return out


def seed_everything(seed: int, deterministic: bool) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def train(recipe, run_dir: str | Path | None = None, *, overwrite: bool = False, resume: bool = False,
          allow_code: bool = False, progress: str = "plain", console=None, runs_root: str | Path = "runs",
          log=None, pipeline: bool = True, quiet_native=None, callbacks: list | None = None) -> TrainResult:
    """Train ``recipe`` into ``run_dir``, then run its ``compress:`` / ``export:`` stages
    (``pipeline=False``: training only). ``progress``: rich, plain or none (all on stderr).

    ``resume``: continue the interrupted run in ``run_dir`` from its last checkpoint. Without
    it, a ``run_dir`` that holds an interrupted (or killed) run of the same recipe is resumed
    too; one of a different recipe is refused. A pipeline stopped after training continues
    with its first unfinished stage. In a multi-worker run every stage trains on every
    worker and only the chief writes (the other workers read its files: shared storage).
    ``quiet_native``: a context manager factory around the export stage (the CLI's silences
    what native converters print). ``callbacks``: extra Keras callbacks for the training stage.
    """
    from dlcli.models.builder import check_code_layers
    from dlcli.pipeline import run_pipeline, wants_pipeline

    check_code_layers(recipe.model, allow_code, getattr(recipe, "_source", None))  # before anything is written
    stages = pipeline and wants_pipeline(recipe)
    unfinished = stages and run_dir is not None and not (Path(run_dir) / "pipeline.json").exists()
    result = run_stage(model_stage(recipe, allow_code), run_dir, overwrite=overwrite, resume=resume,
                       reuse=unfinished, progress=progress, console=console, runs_root=runs_root, log=log,
                       callbacks=callbacks)
    if stages:
        from dlcli import tracking

        with tracking.nested(tracking.run_id_of(result.run_dir) if result.chief else None):
            result.pipeline = run_pipeline(recipe, result.run_dir, allow_code=allow_code, log=log, chief=result.chief,
                                           progress=progress, console=console, quiet_native=quiet_native)
    return result


def run_stage(stage: Stage, run_dir: str | Path | None = None, *, overwrite: bool = False, resume: bool = False,
              reuse: bool = False, progress: str = "plain", console=None, runs_root: str | Path = "runs",
              log=None, callbacks: list | None = None) -> TrainResult:
    """Train ``stage`` into ``run_dir`` through the one loop (resume rules as :func:`train`).
    ``reuse``: a completed run of the same recipe there is returned as it is. ``callbacks``:
    Keras callbacks added to the recipe's (e.g. a tune trial's pruner)."""
    from dlcli import tracking
    from dlcli.distribute import cluster_role, resolve

    started = time.time()
    log = log or (lambda msg: None)
    recipe = stage.recipe
    if resume and overwrite:
        raise UsageError("--resume and --overwrite contradict each other: pick one")
    if resume and run_dir is None:
        raise UsageError("--resume needs --run-dir (the run to continue)")
    role = cluster_role() if resolve(stage.train.strategy, gpus=0, tpu=stage.train.tpu).name == "multi_worker" \
        else None
    chief = role is None or role.chief
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(recipe.name, runs_root)
    checkpoint, previous = None, None
    if run_dir.exists() and not overwrite:
        previous, checkpoint = resumable(recipe, run_dir, explicit=resume, chief=chief, reuse=reuse)
    if checkpoint is COMPLETED:
        log(f"{run_dir}: already completed, kept as it is")
        return _completed(run_dir, previous, chief)
    if chief:
        tracking.precheck(recipe)  # a required tracker that cannot be reached stops before any file is written
    if previous is None and chief:  # a worker other than the chief writes nothing in the run directory
        prepare_run_dir(run_dir, overwrite=overwrite, protect=_protected(recipe))
    env = _start_env(stage, previous, checkpoint, started, run_dir, log)
    tracker = tracking.start(recipe, run_dir, env, stage=stage.kind, log=log) if chief else tracking.Tracker()
    if chief:
        if previous is None:
            write_text(run_dir / "recipe.yaml", recipe_to_yaml(recipe, relative_to=run_dir))
        write_json(run_dir / "env.json", env)
    extra = [c for c in (*(callbacks or []), tracker.callback()) if c is not None]
    try:
        result = _fit(stage, run_dir, env, progress, console, checkpoint, role, extra)
    except BaseException as exc:
        if chief and env.get("status") != "interrupted":
            status = "diverged" if isinstance(exc, TrainingDivergedError) else "failed"
            error = str(exc) if isinstance(exc, DlcliError) else f"{type(exc).__name__}: {exc}"
            finalize(run_dir, env, status, error=error)
        tracker.finish(run_dir, "KILLED" if env.get("status") == "interrupted" else "FAILED")
        raise
    tracker.finish(run_dir, "FINISHED")
    return result


def _protected(recipe) -> list[Path]:
    """The recipe file and the data files: no run directory may hold them."""
    paths = [getattr(getattr(recipe, "_source", None), "file", None)]
    paths += [getattr(recipe.data, a, None) for a in ("path", "validation_path", "test_path", "labels_path")]
    return [Path(p) for p in paths if p and not str(p).startswith("<")]


def _start_env(stage: Stage, previous, checkpoint, started: float, run_dir: Path, log) -> dict[str, Any]:
    recipe = stage.recipe
    env: dict[str, Any] = {"format": RUN_FORMAT, "status": "running", "stage": stage.kind, "started": _iso(started), "seed": recipe.seed,
                           "recipe_hash": recipe_hash(recipe), **stage.env}
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
    return env


def _completed(run_dir: Path, env: dict, chief: bool) -> TrainResult:
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{run_dir}: completed, but its metrics.json cannot be read: {exc}") from exc
    return TrainResult(run_dir, metrics, 0.0, int(env.get("epochs_run", 0)), [],
                       float(env.get("samples_per_second", 0.0)), chief=chief,
                       weights_digest=env.get("weights_sha256", ""), kept_epoch=env.get("kept_epoch"))


def prepare_devices(tr) -> None:
    """``train.cpu_devices``: split the CPU before anything initialises TensorFlow's runtime
    (a stage that loads a model first calls this before loading it)."""
    if tr.cpu_devices:
        from dlcli.distribute import split_cpu

        split_cpu(tr.cpu_devices)


def _runtime(tr):
    """The strategy for ``tr`` (first: multi-worker must configure the runtime before any
    other TensorFlow op runs), a fresh Keras session, seeds and the dtype policy."""
    import keras
    import tensorflow as tf

    from dlcli.distribute import make_strategy, resolve

    resolution = resolve(tr.strategy, gpus=len(tf.config.list_physical_devices("GPU")), tpu=tr.tpu)
    strategy = make_strategy(resolution.name, tr.tpu, worker_timeout=tr.worker_timeout_seconds)
    keras.backend.clear_session()
    policy = "float32" if tr.mixed_precision == "none" else tr.mixed_precision
    keras.mixed_precision.set_dtype_policy(policy)
    return strategy, resolution, policy


def _load(stage: Stage, run_dir: Path, env: dict, checkpoint) -> DataBundle:
    bundle = load_data(stage.recipe, preprocessor=stage.preprocessor)
    if checkpoint is not None and checkpoint.state.get("data_fingerprint") not in (None, bundle.fingerprint):
        raise RunDirError(f"{run_dir}: the data changed since the run was interrupted (fingerprint "
                          f"{checkpoint.state['data_fingerprint'][:12]} -> {bundle.fingerprint[:12]}); "
                          "resuming would mix two data sets: pass --overwrite to start over")
    env["data_fingerprint"] = bundle.fingerprint
    env["data_sizes"] = bundle.sizes
    bundle.set_cache_dir(run_dir)
    return bundle


def _epoch_data(stage: Stage, bundle: DataBundle, ctx, one_hot: bool, workers: int):
    """The training split as per-(seed, epoch) batches, with the recipe's augmentation and class weights."""
    from dlcli.data.pipeline import EpochData, build_augmenter

    recipe, tr = stage.recipe, stage.train
    make_augment = None
    if recipe.data.augment.enabled():
        value_range = bundle.train.value_range()

        def make_augment(seed):
            return build_augmenter(recipe.data.augment, ctx.input_shape, value_range, seed)
    return EpochData(bundle.train, tr.batch_size, pipeline=recipe.data.pipeline, seed=recipe.seed,
                     make_augment=make_augment, steps=tr.steps_per_epoch,
                     class_weight=[bundle.class_weight.get(c, 1.0) for c in range(bundle.num_classes)]
                     if bundle.class_weight else None,
                     one_hot=bundle.num_classes if one_hot else None, workers=workers)


def _fit(stage: Stage, run_dir: Path, env: dict, progress: str, console, checkpoint, role,
         extra: list) -> TrainResult:
    t0 = time.time()
    prepare_devices(stage.train)

    import keras

    # the strategy before the data: streamed sources run TensorFlow ops while loading, and
    # multi-worker must configure the runtime before any op runs
    strategy, resolution, policy = _runtime(stage.train)
    chief = role is None or role.chief
    env["strategy"] = {"name": resolution.name, "reason": resolution.reason,
                       "replicas": int(strategy.num_replicas_in_sync)}
    if role is not None:
        env["strategy"].update(workers=role.workers, task=f"{role.task_type}:{role.task_id}")
    try:
        parts = _assemble(stage, run_dir, env, checkpoint, strategy, role, progress if chief else "none", console,
                          extra)
        snap = None
        if checkpoint is not None:
            from dlcli.train.resume import Snapshot

            snap = Snapshot(checkpoint.epoch, checkpoint.step, checkpoint.arrays(), checkpoint.state)
        flag = parts.loop.signal_flag
        with signals_to(flag.handler):
            result = run_loop(parts.loop, snap, role, run_dir, parts.bundle)
        raise_if_stopped(result, parts.loop, flag, parts.callbacks, run_dir, env, chief)
        prior = float(snap.state.get("fit_seconds", 0.0) if snap else 0.0)
        return _complete(stage, run_dir, env, parts, result, prior, policy, role, t0)
    finally:
        keras.mixed_precision.set_dtype_policy("float32")


@dataclass
class _Parts:
    """What a stage's training is made of, once assembled."""

    loop: Any
    trainable: Any
    bundle: Any
    one_hot: bool
    callbacks: list


def _assemble(stage: Stage, run_dir: Path, env: dict, checkpoint, strategy, role, progress: str, console,
              extra: list) -> _Parts:
    """Data, the stage's model (in the strategy's scope), callbacks and the built loop."""
    from dlcli.models import context_from_data
    from dlcli.train import callbacks as cb
    from dlcli.train.optim import needs_one_hot

    tr, recipe = stage.train, stage.recipe
    bundle = _load(stage, run_dir, env, checkpoint)
    seed_everything(recipe.seed, tr.deterministic)
    ctx = context_from_data(recipe, bundle)
    one_hot = needs_one_hot(tr.loss, recipe.task, tr.metrics)
    data = _epoch_data(stage, bundle, ctx, one_hot, role.workers if role is not None else 1)
    chief = role is None or role.chief
    if stage.prepare is not None:
        stage.prepare(bundle, run_dir, chief)
    with strategy.scope():
        trainable = stage.build(ctx, data.steps_per_epoch, int(strategy.num_replicas_in_sync))
    val_ds = None
    if "validation" in bundle.splits:
        val_ds = bundle.splits["validation"].dataset(tr.batch_size, bundle.num_classes if one_hot else None)
    cbs = trainable.callbacks + cb.recipe_callbacks(
        tr, run_dir, data.steps_per_epoch, progress, console, has_val=val_ds is not None,
        writes=chief, best=stage.best_checkpoint) + extra
    loop = _make_loop(trainable, strategy, data, tr, cbs, val_ds, run_dir, env, bundle, role)
    loop.build(data.first_batch())
    return _Parts(loop, trainable, bundle, one_hot, cbs)


def _complete(stage: Stage, run_dir: Path, env: dict, parts: _Parts, result, prior_seconds: float, policy, role,
              t0: float) -> TrainResult:
    """Final metrics, the stage's files and env.json (chief), then the result on every worker."""
    loop, trainable = parts.loop, parts.trainable
    chief = role is None or role.chief
    metrics = _final_metrics(loop, trainable, parts.bundle, stage.train.batch_size, parts.one_hot)
    kept = _kept_epoch(parts.callbacks)
    sps = result.samples / result.fit_seconds if result.fit_seconds > 0 else 0.0
    digest = _digest(trainable.output)
    if chief:
        _finalize(stage, run_dir, trainable, parts.bundle, metrics, env)
        finalize(run_dir, env, "completed", epochs_run=result.epochs_run,
                 fit_seconds=round(result.fit_seconds + prior_seconds, 3), samples_per_second=round(sps, 1),
                 parameters=int(trainable.output.count_params()), mixed_precision=policy,
                 jit_compile=bool(getattr(trainable.model, "jit_compile", False)), weights_sha256=digest,
                 kept_epoch=kept)
    if role is not None:
        loop.barrier()  # the other workers go on only once the chief's files are complete
    hist = [{"epoch": e + 1, **{k: float(v[i]) for k, v in loop.history.history.items()}}
            for i, e in enumerate(loop.history.epoch)]
    return TrainResult(run_dir, metrics, time.time() - t0, result.epochs_run, hist, sps,
                       chief=chief, weights_digest=digest, kept_epoch=kept)


def _kept_epoch(callbacks) -> int | None:
    """The epoch (1-based) whose weights early stopping restored at the end, if it did."""
    import keras

    es = next((c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)), None)
    if es is None or not es.restore_best_weights or es.best_weights is None:
        return None
    return int(es.best_epoch) + 1


def _final_metrics(loop, trainable, bundle: DataBundle, batch_size: int, one_hot: bool) -> dict:
    """The kept model on every split, through the strategy (all replicas, all workers)."""
    k = bundle.num_classes if one_hot else None
    with data_errors(bundle):
        metrics = {name: loop.evaluate(split.dataset(batch_size, k), trainable.evaluated)
                   for name, split in bundle.splits.items()}
    if trainable.final is not None:
        metrics = trainable.final(metrics)
    if not all(math.isfinite(v) for m in metrics.values() for v in m.values()):
        raise TrainingDivergedError(f"final metrics are not finite: {metrics}")
    return metrics


def _make_loop(trainable, strategy, data, tr, cbs, val_ds, run_dir: Path, env: dict, bundle, role):
    from dlcli.train import callbacks as cb
    from dlcli.train import resume as ckpt
    from dlcli.train.loop import TrainLoop
    from dlcli.train.writer import ShadowSaver

    best = next((c for c in cbs if isinstance(c, cb.Checkpoints)), None)
    if best is not None:
        best.output = trainable.output  # best.keras holds the saved model (a GAN's generator)
    folder = run_dir / "checkpoints"
    model = trainable.model
    shadow = ShadowSaver(trainable.output, model)  # cloned at the first background write

    def write_snapshot(snap, background: bool):
        """The write job, and whether it may run in the background: only from the shadow,
        which never touches the live model (the final writes save the live model at once)."""
        if background and shadow.usable:
            return (lambda: ckpt.write(folder, snap, lambda path: shadow.save(snap.arrays, path))), True
        return (lambda: ckpt.write(folder, snap, trainable.output.save)), False

    interval = tr.callbacks.checkpoint.min_interval_seconds if tr.callbacks.checkpoint else 30.0
    return TrainLoop(model, strategy, data, epochs=tr.epochs, callbacks=cbs, val_ds=val_ds,
                     is_chief=role is None or role.chief, multi_worker=role is not None,
                     checkpoint_interval=interval, write_snapshot=write_snapshot, signal_flag=cb.SignalFlag(),
                     base_state=lambda: {"recipe_hash": env["recipe_hash"], "data_fingerprint": bundle.fingerprint},
                     train_step=trainable.train_step, state=trainable.state,
                     steps_per_execution=tr.steps_per_execution, on_write=best.flush if best is not None else None)


def _finalize(stage: Stage, run_dir: Path, trainable, bundle: DataBundle, metrics: dict, env: dict) -> None:
    """The chief's files: model, preprocessing, labels, metrics, and the stage's own."""
    from dlcli.train import callbacks as cb

    cb.save_model_atomic(trainable.output, run_dir / "model.keras")
    bundle.preprocessor.save(run_dir / "preprocessing.json")
    if bundle.preprocessor.labels:
        write_text(run_dir / "labels.txt", "\n".join(bundle.preprocessor.labels) + "\n")
    write_json(run_dir / "metrics.json", metrics)
    shutil.rmtree(run_dir / "data-cache", ignore_errors=True)  # data.cache: disk; written by this run
    if stage.finish is not None:
        env.update(stage.finish(run_dir, trainable, metrics) or {})
    env.update(environment())


def _digest(model) -> str:
    h = hashlib.sha256()
    for v in model.weights:
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()

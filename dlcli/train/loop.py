"""One training loop for every tf.distribute strategy.

Keras 3 ``model.fit`` fails under ``MultiWorkerMirroredStrategy`` (keras-team/keras#20585).
This loop runs Keras's own ``model.train_step`` / ``test_step`` through ``strategy.run``
on ``strategy.experimental_distribute_dataset``, so the loss, metrics, class weights and
optimizer behave exactly as in ``fit``, and drives the usual Keras callbacks. The same
loop serves the default, one-device, mirrored, multi-worker and TPU strategies.

What it adds over ``fit``:

* **Step-exact resume.** Each epoch's data is a pure function of (seed, epoch)
  (:class:`dlcli.data.pipeline.EpochData`); a :class:`~dlcli.train.resume.Snapshot`
  holds every variable (dropout seed states included), the metric accumulators of a
  part-done epoch, and the callbacks' state, so a resumed run continues the same
  sequence of batches and random draws.
* **Agreement between workers.** Whether to stop (a signal, early stopping, a NaN)
  and whether to checkpoint are decided by each worker and all-reduced every step,
  so every worker takes the same branch and none waits forever in a collective.
* **Metrics over all replicas.** Epoch metrics are read in cross-replica context: the
  sums and counts of every replica on every worker, all-reduced.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from dlcli.train.resume import Snapshot
from dlcli.train.writer import BackgroundWriter, DeviceStash

# callback attributes that make up its state between epochs (restored on resume)
_CALLBACK_STATE = {
    "EarlyStopping": ("wait", "stopped_epoch", "best", "best_epoch"),
    "ReduceLROnPlateau": ("wait", "best", "cooldown_counter"),
    "Checkpoints": ("best", "best_epoch", "last_epoch"),
    "HistoryCSV": ("rows",),
}


@dataclass
class LoopResult:
    epochs_run: int  # epochs completed, counting those before a resume
    stop: str | None = None  # None (ran to the end or stopped early), "signal" or "diverged"
    epoch: int = 0  # where a signal stopped it: epoch (0-based) and steps done in it
    step: int = 0
    samples: int = 0  # samples trained in this process
    fit_seconds: float = 0.0  # in this process


class TrainLoop:
    """Trains ``model`` with ``train_step`` (default: ``model.train_step``) on ``data``.

    ``steps_per_execution`` steps run inside one compiled call (a ``tf.while_loop``), so
    Python, callbacks and the host see the device once per execution, not once per step.
    ``state`` lists variables outside the model (pruning masks) that checkpoints carry.
    """

    def __init__(self, model, strategy, data, *, epochs: int, callbacks: list, val_ds=None,
                 is_chief: bool = True, multi_worker: bool = False, checkpoint_interval: float = 30.0,
                 write_snapshot: Callable[[Snapshot, bool], tuple] | None = None, signal_flag: Callable[[], bool],
                 base_state: Callable[[], dict] | None = None, train_step: Callable | None = None,
                 state: list | tuple = (), steps_per_execution: int | str = 1,
                 on_write: Callable[[], None] | None = None):
        self.model, self.strategy, self.data, self.epochs = model, strategy, data, epochs
        self.val_ds = val_ds
        self.is_chief, self.multi_worker = is_chief, multi_worker
        self.interval = checkpoint_interval
        self.write_snapshot = write_snapshot if is_chief else None
        self.signal_flag = signal_flag
        self.base_state = base_state or dict
        self.state = list(state)
        self.auto = steps_per_execution == "auto"
        if self.auto:  # adapted to the measured step time; fixed under multi-worker (every worker must agree)
            self.spe = min(16, data.steps_per_epoch) if multi_worker else 1
        else:
            self.spe = max(1, int(steps_per_execution))
        self._calls = 0
        self.history = keras.callbacks.History()
        self.callbacks = list(callbacks) + [self.history]
        self.cbl = keras.callbacks.CallbackList(self.callbacks, model=model, epochs=epochs,
                                                steps=data.steps_per_epoch, verbose=0)
        self.on_write = on_write
        self._writer = BackgroundWriter()
        self._stash: DeviceStash | None = None  # created once the variables exist
        self.prior_fit_seconds = 0.0
        self._t0 = 0.0
        self._last_write = time.monotonic()
        self._train_fn = self._make_step(train_step or model.train_step, with_flags=multi_worker)
        self._test_fns: dict[int, Callable] = {}
        self._agree_fn = self._make_agree() if multi_worker else None

    # ---- compiled functions -------------------------------------------------------------
    def _make_step(self, step_fn, with_flags: bool = False, jit: bool | None = None, model=None):
        """``k`` distributed steps in one call, all inside one ``tf.while_loop`` (so a step
        computes the same whatever ``k`` and wherever it falls in a call), then the logs:
        the metrics of every replica, as ``model.get_metrics_result()`` gives them.
        ``with_flags`` (multi-worker): the call also takes this worker's decision flags and
        all-reduces them in the same collective as the logs, so agreeing costs no extra
        round trip."""
        strategy = self.strategy
        model = model or self.model
        inner = step_fn
        if getattr(self.model, "jit_compile", False) if jit is None else jit:
            inner = tf.function(step_fn, jit_compile=True, reduce_retracing=True)

        def steps(iterator, k):
            for _ in tf.range(k):
                strategy.run(inner, args=(next(iterator),))
            return strategy.run(model.get_metrics_result)

        @tf.function(reduce_retracing=True)
        def run(iterator, k):
            out = steps(iterator, k)
            return {name: strategy.reduce("MEAN", v, axis=None) for name, v in out.items()}

        @tf.function(reduce_retracing=True)
        def run_with_flags(iterator, k, flags):
            out = steps(iterator, k)
            keys = sorted(out)
            shapes = {}

            def pack(o, f):
                parts = []
                for name in keys:
                    shapes[name] = o[name].shape
                    parts.append(tf.reshape(tf.cast(o[name], tf.float32), [-1]))
                return tf.concat([*parts, f], 0)

            total = strategy.reduce("SUM", strategy.run(pack, args=(out, flags)), axis=None)
            n, logs, i = strategy.num_replicas_in_sync, {}, 0
            for name in keys:
                size = max(1, shapes[name].num_elements() or 1)
                logs[name] = tf.reshape(total[i:i + size] / n, shapes[name])
                i += size
            return logs, total[i:]

        return run_with_flags if with_flags else run

    def _make_agree(self):
        strategy = self.strategy

        @tf.function
        def agree(values):
            return strategy.reduce("SUM", strategy.run(lambda: tf.identity(values)), axis=None)

        return agree

    def _sum(self, *values: float) -> list[float]:
        """Every replica's values, summed (the values themselves with one replica)."""
        if self._agree_fn is None:
            return [float(v) for v in values]
        return [float(v) for v in self._agree_fn(tf.constant(values, tf.float64)).numpy()]

    def _agree(self, *flags: bool) -> list[bool]:
        """Every worker's flags, OR-ed across workers (identity on one worker)."""
        return [v > 0 for v in self._sum(*(1.0 if f else 0.0 for f in flags))]

    def barrier(self) -> None:
        """Every worker waits here until all have arrived (a no-op on one worker)."""
        self._sum(1.0)

    def _check_same_start(self, epoch: int, step: int) -> None:
        """Every worker resumes from the same point (the same answer on every worker)."""
        n = self.strategy.num_replicas_in_sync  # every replica of this worker adds the same values
        s_e, s_s, q_e, q_s = self._sum(epoch, step, epoch * epoch, step * step)
        if q_e / n - (s_e / n) ** 2 > 1e-9 or q_s / n - (s_s / n) ** 2 > 1e-9:
            from dlcli.errors import RunDirError

            raise RunDirError(
                f"the workers would resume from different points (this one: epoch {epoch + 1}, step {step}): "
                "every worker must read the chief's checkpoints, so put the run directory on storage they all share")

    # ---- state ----------------------------------------------------------------------------
    def build(self, batch) -> None:
        """Create every variable (model, optimizer, compiled metrics) before training or a restore."""
        with self.strategy.scope():
            self.model._symbolic_build(data_batch=batch)  # what fit() does before its first step
            if self.model.optimizer is not None and not self.model.optimizer.built:
                self.model.optimizer.build(self.model.trainable_variables)

    def _variables(self) -> dict[str, list]:
        opt = self.model.optimizer
        return {"model": list(self.model.variables), "optimizer": list(opt.variables) if opt is not None else [],
                "metrics": list(self.model.metrics_variables), "state": self.state}

    def snapshot(self, epoch: int, step: int, extra: dict | None = None, host: tuple | None = None) -> Snapshot:
        """Copy every variable and callback state to host memory (all workers take part:
        reading metric variables all-reduces them). ``host``: the callback state and
        history to record instead of the current ones (see :meth:`_host_state`)."""
        arrays: dict[str, np.ndarray] = {}
        with self.strategy.scope():
            for group, variables in self._variables().items():
                for i, v in enumerate(variables):
                    arrays[f"{group}/{i}"] = np.array(v.numpy(), copy=True)
        cb_state, cb_arrays, history, fit_seconds = host or self._host_state()
        arrays.update(cb_arrays)
        state = {**self.base_state(), "epoch": epoch, "step": step, "callbacks": cb_state,
                 "fit_seconds": round(fit_seconds, 3), "history": history,
                 "optimizer_iterations": int(self.model.optimizer.iterations.numpy()), **(extra or {})}
        return Snapshot(epoch, step, arrays, state)

    def _host_state(self) -> tuple:
        """The callbacks' state (and early stopping's best weights), the history, the fit time."""
        cb_state: dict = {}
        arrays: dict[str, np.ndarray] = {}
        for i, c in enumerate(self.callbacks):
            name = type(c).__name__
            if name in _CALLBACK_STATE:
                cb_state[f"{i}:{name}"] = {a: _plain(getattr(c, a, None)) for a in _CALLBACK_STATE[name]}
            if name == "EarlyStopping" and getattr(c, "best_weights", None) is not None:
                for j, w in enumerate(c.best_weights):
                    arrays[f"early_stopping/{j}"] = np.asarray(w)
        history = {"epoch": list(self.history.epoch),
                   "history": {k: [float(x) for x in v] for k, v in self.history.history.items()}}
        fit_seconds = self.prior_fit_seconds + (time.perf_counter() - self._t0 if self._t0 else 0.0)
        return cb_state, arrays, history, fit_seconds

    def restore(self, snap: Snapshot, groups=("model", "optimizer", "metrics", "state"),
                callbacks: bool = True) -> None:
        """Load a snapshot into the model, optimizer, metrics, callbacks and history."""
        from dlcli.errors import RunDirError

        with self.strategy.scope():
            for group, variables in self._variables().items():
                if group not in groups or (group == "state" and not variables):
                    continue
                saved = sorted((k for k in snap.arrays if k.startswith(group + "/")), key=lambda k: int(k.split("/")[1]))
                if len(saved) != len(variables):
                    raise RunDirError(f"checkpoint does not match the model: {len(saved)} {group} variables saved, "
                                      f"{len(variables)} in the model built from the recipe")
                for v, k in zip(variables, saved, strict=True):
                    value = snap.arrays[k]
                    if tuple(value.shape) != tuple(v.shape):
                        raise RunDirError(f"checkpoint does not match the model: {v.path} has shape {tuple(v.shape)}, "
                                          f"the checkpoint {tuple(value.shape)}")
                    v.assign(value)
        if not callbacks:
            return
        for i, c in enumerate(self.callbacks):
            saved = snap.state.get("callbacks", {}).get(f"{i}:{type(c).__name__}")
            if saved:
                for a, value in saved.items():
                    setattr(c, a, value)
            if type(c).__name__ == "EarlyStopping":
                keys = sorted((k for k in snap.arrays if k.startswith("early_stopping/")), key=lambda k: int(k.split("/")[1]))
                c.best_weights = [snap.arrays[k] for k in keys] or None
        h = snap.state.get("history", {})
        self.history.epoch = list(h.get("epoch", []))
        self.history.history = {k: list(v) for k, v in h.get("history", {}).items()}

    def _metrics_result(self, model=None) -> dict[str, float]:
        with self.strategy.scope():  # cross-replica read: every replica's sums and counts
            results = (model or self.model).get_metrics_result()
            return {k: float(keras.ops.convert_to_numpy(v)) for k, v in results.items()}

    def evaluate(self, ds, model=None) -> dict[str, float]:
        """``model.evaluate`` through the strategy (default: the trained model), in
        executions of ``steps_per_execution`` steps: metrics over every replica of every worker."""
        model = model or self.model
        fn = self._test_fns.get(id(model))
        if fn is None:
            jit = getattr(model, "jit_compile", False)
            fn = self._test_fns[id(model)] = self._make_step(model.test_step, jit=jit, model=model)
        model.reset_metrics()
        it = iter(self.strategy.experimental_distribute_dataset(ds))
        left = int(ds.cardinality().numpy())
        if left < 0:  # unknown (e.g. a filtered stream): count the batches with a pass over them
            left = int(ds.reduce(np.int64(0), lambda n, _: n + 1).numpy())
        while left > 0:
            k = min(self.spe, left)
            fn(it, tf.constant(k))
            left -= k
        return self._metrics_result(model)

    # ---- the loop -------------------------------------------------------------------------
    _AUTO_SECONDS, _AUTO_MAX = 0.2, 64

    def _adapt(self, k: int, seconds: float) -> None:
        """``steps_per_execution: auto``: about 200 ms per call, measured after the first
        calls (which trace). Every worker must run the same number of steps per call, so
        multi-worker keeps a fixed value (16 for auto)."""
        self._calls += 1
        if not self.auto or self.multi_worker or self._calls < 3 or seconds <= 0:
            return
        per_step = seconds / k
        self.spe = max(1, min(self._AUTO_MAX, self.data.steps_per_epoch, int(self._AUTO_SECONDS / per_step)))

    def _due(self, mid_epoch: bool = False) -> bool:
        """Time for a checkpoint? Within an epoch only with a positive interval."""
        if self.write_snapshot is None or (mid_epoch and self.interval <= 0):
            return False
        return time.monotonic() - self._last_write >= self.interval

    def _write(self, snap: Snapshot, final: bool = False) -> None:
        """Write ``snap``: a periodic write in the background where ``write_snapshot``
        (called here, on the training thread) returns a job that may run there; a final
        one (training ends, a signal, a NaN) at once, from the live model."""
        if self.write_snapshot is not None:
            job, background = self.write_snapshot(snap, not final)
            self._writer.submit(job, background=background and not final)
            if self.on_write is not None:
                self.on_write()
        if self._stash is not None:
            self._stash.clear()
        self._last_write = time.monotonic()

    def _stash_epoch(self, epoch: int) -> None:
        """A finite epoch that is not written: keep it on the device for a NaN to fall back to."""
        if self._stash is None:
            groups = self._variables()
            self._stash = DeviceStash(self.strategy, groups["model"] + groups["optimizer"] + groups["state"])
        self._stash.save((epoch, self._host_state()))

    def _write_stashed(self) -> None:
        """Write the last finite epoch kept on the device (the live model goes back to it)."""
        if self._stash is None or self._stash.meta is None:
            return
        epoch, host = self._stash.meta
        self._stash.restore()
        self._write(self.snapshot(epoch, 0, host=host), final=True)

    def run(self, resume: Snapshot | None = None) -> LoopResult:
        """Train from the start, or from ``resume``; a checkpoint being written is finished first."""
        try:
            return self._run(resume)
        except BaseException:
            self._writer.join(raise_error=False)
            raise

    def _run(self, resume: Snapshot | None) -> LoopResult:
        model = self.model
        start_epoch, start_step = (resume.epoch, resume.step) if resume else (0, 0)
        if self.multi_worker:
            self._check_same_start(start_epoch, start_step)
        model.stop_training = False
        self.cbl.on_train_begin()
        if resume is not None:
            self.restore(resume)  # after on_train_begin, which resets the callbacks
            self.prior_fit_seconds = float(resume.state.get("fit_seconds", 0.0))
        self._last_write = time.monotonic()
        self._samples, t0 = 0, time.perf_counter()
        self._t0 = t0
        epoch = start_epoch
        for epoch in range(start_epoch, self.epochs):
            skip = start_step if epoch == start_epoch else 0
            if not skip:  # else the restored accumulators of the part-done epoch carry on
                model.reset_metrics()
            self.cbl.on_epoch_begin(epoch)
            stopped = self._epoch_steps(epoch, skip, t0) or self._end_epoch(epoch, t0)
            if stopped is not None:
                return stopped
            if model.stop_training:
                break
        if self._diverged():  # the last finite epoch, never a NaN one
            self._write_stashed()
        self._writer.join()
        fit_seconds = time.perf_counter() - t0
        self.cbl.on_train_end()
        return LoopResult(len(self.history.epoch), "diverged" if self._diverged() else None, epoch, 0,
                          self._samples, fit_seconds)

    def _epoch_steps(self, epoch: int, skip: int, t0: float) -> LoopResult | None:
        """The epoch's steps from ``skip``, ``steps_per_execution`` at a time; the result of an
        interruption, else None (a divergence sets ``stop_training``)."""
        model, data, steps = self.model, self.data, self.data.steps_per_epoch
        it = iter(data.distribute(self.strategy, epoch, skip))
        step = skip
        while step < steps:
            k = min(self.spe, steps - step)
            started = time.perf_counter()
            self.cbl.on_train_batch_begin(step)
            local = (self.signal_flag(), bool(model.stop_training), self._due(True))
            if self.multi_worker:  # the flags travel with the execution's own all-reduce
                flags = tf.constant([float(f) for f in local], tf.float32)
                logs, summed = self._train_fn(it, tf.constant(k), flags)
                stop, diverged, save = (bool(v > 0) for v in summed.numpy())
            else:
                logs = self._train_fn(it, tf.constant(k))
                stop, diverged, save = local
            self._samples += data.samples(step, k)
            step += k
            self._adapt(k, time.perf_counter() - started)
            self.cbl.on_train_batch_end(step - 1, logs)
            if stop:
                return self._interrupted(epoch, step, logs, self._samples, t0)
            if diverged:
                model.stop_training = True
                return None
            if save and step < steps and _finite(logs):
                self._write(self.snapshot(epoch, step))
        return None

    def _end_epoch(self, epoch: int, t0: float) -> LoopResult | None:
        """Validation, the epoch's callbacks, and its checkpoint (written when due, else
        stashed on the device); the result of an interruption, else None."""
        model = self.model
        epoch_logs = self._metrics_result()
        if self.val_ds is not None and not model.stop_training:
            epoch_logs.update({f"val_{k}": v for k, v in self.evaluate(self.val_ds).items()})
        self.cbl.on_epoch_end(epoch, epoch_logs)
        finite = all(math.isfinite(v) for v in epoch_logs.values())
        if not finite or self._diverged():
            return None
        stop, save = self._agree(self.signal_flag(), self._due() or epoch + 1 == self.epochs)
        if save or stop or model.stop_training:
            last = stop or model.stop_training or epoch + 1 == self.epochs
            self._write(self.snapshot(epoch + 1, 0, {"interrupted": True} if stop else None), final=last)
        else:
            self._stash_epoch(epoch + 1)
        if stop:
            return self._interrupted(epoch + 1, 0, epoch_logs, self._samples, t0, written=True)
        return None

    def _diverged(self) -> bool:
        return any(getattr(c, "diverged_at", None) is not None for c in self.callbacks)

    def _interrupted(self, epoch: int, step: int, logs, samples: int, t0: float, written: bool = False) -> LoopResult:
        fit_seconds = time.perf_counter() - t0
        if not written:
            if _finite(logs):
                self._write(self.snapshot(epoch, step, {"interrupted": True}), final=True)
            else:
                self._write_stashed()
        self._writer.join()
        everything = self.cbl.callbacks  # close progress bars and logs;
        self.cbl.callbacks = [c for c in everything if type(c).__name__ != "EarlyStopping"]  # no best-weight swap
        try:
            self.cbl.on_train_end()
        finally:
            self.cbl.callbacks = everything
        return LoopResult(len(self.history.epoch), "signal", epoch, step, samples, fit_seconds)


def _finite(logs) -> bool:
    return all(math.isfinite(float(keras.ops.convert_to_numpy(v))) for v in (logs or {}).values())


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return value  # json writes Infinity / NaN, and reads them back
    return value

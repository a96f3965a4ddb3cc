"""Callbacks: atomic history and checkpoints, divergence detection, progress."""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np

from dlcli.atomic import atomic_path, write_text


def save_model_atomic(model, target: Path) -> None:
    with atomic_path(target, suffix=".keras") as tmp:
        model.save(tmp)


class HistoryCSV(keras.callbacks.Callback):
    """history.csv rewritten atomically at every epoch end."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path
        self.rows: list[dict] = []

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        lr = self.model.optimizer.learning_rate
        row["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        self.rows.append(row)
        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=keys)
        w.writeheader()
        w.writerows(self.rows)
        write_text(self.path, buf.getvalue())


HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "fbeta", "iou")


def monitor_mode(monitor: str | None, mode: str = "auto") -> str:
    """``auto``: max for accuracy-like names, min for every other (losses, errors, distances);
    Keras's own ``auto`` refuses names it does not know (e.g. a GAN's frechet_distance)."""
    if mode != "auto":
        return mode
    return "max" if monitor and any(k in monitor for k in HIGHER_IS_BETTER) else "min"


class Checkpoints(keras.callbacks.Callback):
    """checkpoints/best.keras: the best monitored epoch.

    An improving epoch is copied to host memory (weights and optimizer state: no I/O);
    the file is written, atomically, by :meth:`flush`, which the training loop calls
    whenever it writes a resume checkpoint and when training ends. An epoch with a NaN
    or inf value never counts as an improvement.
    """

    def __init__(self, folder: Path, monitor: str | None, mode: str = "auto"):
        super().__init__()
        self.folder = folder
        self.monitor = monitor
        self.mode = monitor_mode(monitor, mode)
        self.best = -math.inf if self.mode == "max" else math.inf
        self.best_epoch: int | None = None
        self.last_epoch: int | None = None
        self._best: list | None = None
        self.output = None  # the model to save, when not the trained one (its weights are among them)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not all(math.isfinite(float(v)) for v in logs.values()):
            return
        self.last_epoch = epoch + 1
        value = logs.get(self.monitor) if self.monitor else None
        if value is None:
            return
        value = float(value)
        if value > self.best if self.mode == "max" else value < self.best:
            self.best, self.best_epoch = value, epoch + 1
            self._best = _host_copy(self.model)

    def flush(self) -> None:
        """Write best.keras if a better epoch is only in memory."""
        if self._best is None:
            return
        current = _host_copy(self.model)
        _assign(self.model, self._best)
        try:
            save_model_atomic(self.output or self.model, self.folder / "best.keras")
        finally:
            _assign(self.model, current)
        self._best = None

    def on_train_end(self, logs=None):
        self.flush()


def _host_copy(model) -> list:
    opt = getattr(model, "optimizer", None)
    variables = list(model.variables) + (list(opt.variables) if opt is not None and opt.built else [])
    return [(v, np.array(v.numpy(), copy=True)) for v in variables]


def _assign(model, copy: list) -> None:
    for v, value in copy:
        v.assign(value)


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """TensorBoard logging at epoch level only.

    Keras's TensorBoard overrides the per-batch hooks (even with update_freq="epoch");
    restoring the default no-op hooks keeps it off the per-execution path.
    """

    on_train_batch_begin = keras.callbacks.Callback.on_train_batch_begin
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first NaN / inf loss (any ``*_loss``, and a generator's score), per
    execution or per epoch.

    Per execution (``per_batch``) it reads the loss once every ``steps_per_execution``
    steps, where the loop already waits for the device: no extra host sync.
    """

    def __init__(self, per_batch: bool):
        super().__init__()
        self.per_batch = per_batch
        self.diverged_at: tuple[int, int | None] | None = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    @staticmethod
    def watched(name: str) -> bool:
        """Every loss (a GAN's d_loss and g_loss too) and a generator's sample score."""
        return name == "loss" or name.endswith(("_loss", "frechet_distance"))

    def _check(self, logs, batch):
        bad = [k for k, v in (logs or {}).items() if self.watched(k) and not math.isfinite(float(v))]
        if bad:
            self.diverged_at = (self.epoch + 1, batch)
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        if self.per_batch and self.diverged_at is None:
            self._check(logs, batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        if self.diverged_at is None:
            self._check(logs, None)


def _fmt(logs: dict, width: int | None = None) -> str:
    """``name value`` pairs in the logs' order; with ``width``, as many as fit, dropping the
    least important first (other metrics, then validation metrics, then val_loss; loss
    last). A number is never cut."""
    parts = [(f"{k} {float(v):.4f}", _rank(k), i) for i, (k, v) in enumerate(logs.items())]
    while width is not None and parts and len("  ".join(p for p, _, _ in parts)) > width:
        parts.remove(max(parts, key=lambda p: (p[1], p[2])))
    return "  ".join(p for p, _, _ in parts)


def _rank(name: str) -> int:
    return {"loss": 0, "val_loss": 1}.get(name, 2 if name.startswith("val_") else 3)


def _columns(stream) -> int | None:
    """The terminal's width when ``stream`` is one (None: not a terminal, never cut)."""
    import shutil

    try:
        return shutil.get_terminal_size().columns if stream.isatty() else None
    except (AttributeError, ValueError, OSError):
        return None


class PlainProgress(keras.callbacks.Callback):
    """One line per epoch on stderr (non-terminal output, --quiet)."""

    def __init__(self, epochs: int, stream=None):
        super().__init__()
        self.epochs = epochs
        self.stream = stream or sys.stderr
        self.t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        dt = time.perf_counter() - self.t0
        head, tail = f"epoch {epoch + 1}/{self.epochs}  ", f"  ({dt:.1f}s)"
        cols = _columns(self.stream)
        room = None if cols is None else max(0, cols - 1 - len(head) - len(tail))
        print(f"{head}{_fmt(logs or {}, room)}{tail}", file=self.stream, flush=True)


class RichProgress(keras.callbacks.Callback):
    """A Rich progress bar on the terminal: epoch, step, loss and metrics."""

    def __init__(self, epochs: int, steps: int, console, refresh_seconds: float = 0.25):
        super().__init__()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.epochs, self.steps, self.every = epochs, steps, refresh_seconds
        self._shown = 0.0
        self.console = console
        self.progress = Progress(
            TextColumn("epoch {task.fields[epoch]}"), BarColumn(bar_width=12), MofNCompleteColumn(),
            TextColumn("{task.fields[metrics]}"), TimeElapsedColumn(), console=console, transient=False,
        )
        # what the other columns take: epoch N/N, the bar, step M/N, the elapsed time, spaces
        fixed = len(f"epoch {epochs}/{epochs}") + 12 + 2 * len(str(steps)) + 1 + 7 + 5
        self.room = max(0, (getattr(console, "width", None) or 100) - fixed)
        self.task = None

    def on_train_begin(self, logs=None):
        self.progress.start()

    def on_epoch_begin(self, epoch, logs=None):
        self.task = self.progress.add_task("train", total=self.steps, epoch=f"{epoch + 1}/{self.epochs}", metrics="")

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()  # reading the logs waits for the device: at a bounded rate only
        if now - self._shown >= self.every or batch + 1 == self.steps:
            self._shown = now
            self.progress.update(self.task, completed=batch + 1, metrics=_fmt(logs or {}, self.room))

    def on_epoch_end(self, epoch, logs=None):
        self.progress.update(self.task, completed=self.steps, metrics=_fmt(logs or {}, self.room))

    def on_train_end(self, logs=None):
        self.progress.stop()


class SignalFlag:
    """SIGTERM / SIGINT set a flag; the training loop stops after the current step."""

    def __init__(self):
        self.signal: int | None = None

    def handler(self, signum, frame):  # installed by the trainer
        self.signal = signum

    def __call__(self) -> bool:
        return self.signal is not None


def recipe_callbacks(tr, run_dir: Path, steps: int, progress: str, console, has_val: bool, writes: bool = True,
                     best: bool = True) -> list:
    """The callbacks of the TrainSpec ``tr``; ``writes=False`` (a worker other than the chief)
    leaves out every one that writes files or prints; ``best=False`` leaves out best.keras."""
    c = tr.callbacks
    out: list = [DivergenceGuard(per_batch=c.terminate_on_nan)]

    def monitor(name: str) -> str:
        if name.startswith("val_") and not has_val:
            return name[4:]
        return name

    if c.early_stopping:
        es = c.early_stopping
        out.append(keras.callbacks.EarlyStopping(
            monitor=monitor(es.monitor), patience=es.patience, min_delta=es.min_delta,
            mode=monitor_mode(es.monitor, es.mode),
            restore_best_weights=es.restore_best_weights, verbose=0))
    if c.reduce_lr_on_plateau:
        r = c.reduce_lr_on_plateau
        out.append(keras.callbacks.ReduceLROnPlateau(monitor=monitor(r.monitor), factor=r.factor,
                                                     patience=r.patience, min_lr=r.min_lr, verbose=0,
                                                     mode=monitor_mode(r.monitor)))
    if not writes:
        return out
    ck = c.checkpoint
    if ck and best:
        out.append(Checkpoints(run_dir / "checkpoints", monitor(ck.monitor), ck.mode))
    if c.csv_history:
        out.append(HistoryCSV(run_dir / "history.csv"))
    if c.tensorboard:
        out.append(EpochTensorBoard(log_dir=str(run_dir / "tensorboard"), write_graph=False, profile_batch=0))
    if progress == "rich":
        out.append(RichProgress(tr.epochs, tr.steps_per_epoch or steps, console))
    elif progress == "plain":
        out.append(PlainProgress(tr.epochs))
    return out

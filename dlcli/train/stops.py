"""How a training run stops other than by finishing: a signal (exit 130), a NaN (exit 4),
a file of a streamed split that cannot be read (exit 3), a lost worker (exit 9)."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

from dlcli.data import DataBundle
from dlcli.errors import DataError, TrainingDivergedError, WorkerLostError


def iso_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(t))


def raise_if_stopped(result, loop, flag, cbs, run_dir: Path, env: dict, chief: bool) -> None:
    """A signal becomes TrainingInterrupted (exit 130), a NaN TrainingDivergedError (exit 4)."""
    from dlcli.train import callbacks as cb
    from dlcli.train import resume as ckpt

    folder = run_dir / "checkpoints"
    if result.stop == "signal":
        import signal as _signal

        from dlcli.errors import TrainingInterrupted

        latest = ckpt.latest(folder)
        state = {"signal": _signal.Signals(flag.signal).name, "epoch": result.epoch + 1,
                 "step_in_epoch": result.step, "optimizer_iterations": int(loop.model.optimizer.iterations.numpy())}
        if chief:
            from dlcli.rundir import finalize

            finalize(run_dir, env, "interrupted", interrupted=state)
        kept = f"{folder / 'last.keras'} was written" if latest else "no checkpoint could be written"
        raise TrainingInterrupted(
            f"{state['signal']} at epoch {state['epoch']}, step {state['step_in_epoch']}: the step finished "
            f"and {kept}; continue with --resume")
    guard = next(c for c in cbs if isinstance(c, cb.DivergenceGuard))
    if guard.diverged_at is not None or result.stop == "diverged":
        epoch, batch = guard.diverged_at or (result.epoch + 1, None)
        last = folder / "last.keras"
        kept = f"last good checkpoint kept: {last}" if last.exists() else "no epoch finished cleanly, so no checkpoint"
        where = f"epoch {epoch}" + (f", step {batch}" if batch else "")
        raise TrainingDivergedError(
            f"loss became NaN or inf at {where}; {kept} (lower train.optimizer.learning_rate or add clipnorm)")


@contextmanager
def data_errors(bundle: DataBundle):
    """A file of a streamed split that fails to read or decode mid-epoch becomes one
    DataError naming it (found by a scan of the split's files, only on this error path)."""
    import tensorflow as tf

    try:
        yield
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.DataLossError,
            tf.errors.UnknownError) as exc:
        for split in (s for s in bundle.splits.values() if s.streamed):
            bad = split.find_unreadable()
            if bad is not None:
                raise DataError(f"{bad[0]}: cannot read or decode this example ({bad[1][:200]}); "
                                "remove or replace the file") from exc
        raise


def run_loop(loop, snap, role, run_dir: Path, bundle: DataBundle):
    """``loop.run``; a file that cannot be decoded, and in a multi-worker run a lost peer,
    become one clear error."""
    import tensorflow as tf

    try:
        with data_errors(bundle):
            return loop.run(snap)
    except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
            tf.errors.CancelledError, tf.errors.InternalError) as exc:
        if role is None:
            raise
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
        raise WorkerLostError(
            f"a worker of the {role.workers}-worker cluster stopped responding ({type(exc).__name__}: {first[:160]}); "
            f"this worker ({role.task_type} {role.task_id}) stopped too. Restart every worker with "
            f"--resume --run-dir {run_dir} to continue from the last checkpoint") from exc

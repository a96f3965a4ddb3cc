"""The Optuna study behind ``dlcli tune``: SQLite storage in the output folder, a budget
shared by every process (a file lock around "count, then ask"), and trials left running by a
killed process found and continued."""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
from pathlib import Path

from dlcli.errors import RunDirError, TrackingError
from dlcli.rundir import owner_alive

DB_NAME = "study.db"
MARKER = "tune.json"  # written by dlcli tune: the folder is a study


def lock_wait() -> float:
    """Seconds to wait for a study database another process holds (DLCLI_STUDY_LOCK_TIMEOUT, default 60)."""
    try:
        return max(0.1, float(os.environ.get("DLCLI_STUDY_LOCK_TIMEOUT", "60")))
    except ValueError:
        return 60.0


def storage_url(out: Path) -> str:
    return f"sqlite:///{(out / DB_NAME).resolve()}"


@contextlib.contextmanager
def store_errors(out: Path):
    """A locked, corrupt or unreadable study database becomes one TrackingError (exit 11)."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (SQLAlchemyError, StorageInternalError) as exc:
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0][:200]
        raise TrackingError(f"{out / DB_NAME}: the study database cannot be used ({cause}); a locked database "
                            "frees itself when the other process ends, a corrupt one needs a new --out") from exc


def prepare_out(out: Path) -> None:
    """``out`` is new, empty, or a study folder dlcli wrote (which is continued)."""
    if out.exists() and not out.is_dir():
        raise RunDirError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / DB_NAME).exists():
        raise RunDirError(f"{out}: exists and is not a dlcli tune folder (no {DB_NAME}); give a new or empty --out")
    out.mkdir(parents=True, exist_ok=True)


def open_study(out: Path, recipe, names: list[str], directions: list[str], *, parallel: bool, worker: int = 0):
    """Create or load the study of ``recipe`` in ``out``; refuses one made from another recipe
    or for other objectives. Worker ``i`` of a parallel search seeds its sampler with seed + i
    (the same seed everywhere would sample the same points)."""
    import optuna

    from dlcli.recipe.loader import recipe_hash

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = recipe.tune
    if spec.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=recipe.seed + worker)
    else:
        sampler = optuna.samplers.TPESampler(seed=recipe.seed + worker, n_startup_trials=spec.startup_trials,
                                             multivariate=True, constant_liar=parallel)
    single = len(names) == 1 and spec.pruner == "median"
    pruner = optuna.pruners.MedianPruner(n_startup_trials=spec.startup_trials, n_warmup_steps=1) if single \
        else optuna.pruners.NopPruner()
    with store_errors(out):
        storage = optuna.storages.RDBStorage(storage_url(out), engine_kwargs={"connect_args": {"timeout": lock_wait()}})
        study = optuna.create_study(storage=storage, study_name=recipe.name, directions=directions,
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
        attrs = study.user_attrs
        digest = recipe_hash(recipe)
        if not attrs:
            study.set_user_attr("recipe_hash", digest)
            study.set_user_attr("objectives", names)
        elif attrs.get("recipe_hash") != digest:
            raise TrackingError(f"{out / DB_NAME}: this study was made from another recipe (the model, data or "
                                "training differ; only tune: may change between sessions): give a new --out")
        elif attrs.get("objectives") != names:
            raise TrackingError(f"{out / DB_NAME}: this study optimizes {', '.join(attrs.get('objectives', []))}, "
                                f"not {', '.join(names)}: give a new --out")
    return study


@contextlib.contextmanager
def locked(out: Path):
    with open(out / ".study.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _claim(trial) -> None:
    trial.set_user_attr("host", platform.node())
    trial.set_user_attr("pid", os.getpid())


def next_trial(study, out: Path, budget: int):
    """``(trial, resumed)``: first a trial a killed process left running on this host (it is
    continued), else a new one while the study holds fewer than ``budget``; None when done."""
    import optuna
    from optuna.trial import TrialState

    with locked(out), store_errors(out):
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            host, pid = t.user_attrs.get("host"), t.user_attrs.get("pid")
            if host == platform.node() and isinstance(pid, int) and pid != os.getpid() and not owner_alive(host, pid):
                trial = optuna.trial.Trial(study, t._trial_id)
                _claim(trial)
                return trial, True
        if len(study.get_trials(deepcopy=False)) >= budget:
            return None, False
        trial = study.ask()
        _claim(trial)
        return trial, False

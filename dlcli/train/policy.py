"""Resume policy: which run directory may be continued, with which checkpoint, and the
signal routing that turns SIGTERM / SIGINT into a checkpoint and a clean stop."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from dlcli.errors import DlcliError, RunDirError

# where the run happens rather than what it trains: a resume may change them
_WHERE = ("strategy", "tpu", "cpu_devices", "worker_timeout_seconds")


def resume_key(recipe) -> str:
    """The recipe's hash without the settings that only say where it runs."""
    data = recipe.model_dump(mode="json")
    for key in _WHERE:
        data["train"].pop(key, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


COMPLETED = "completed"


def resumable(recipe, run_dir: Path, *, explicit: bool, chief: bool, reuse: bool = False):
    """``(env, checkpoint)`` when ``run_dir`` holds a run to continue, ``(None, None)`` when it
    holds nothing; refuses a run of another recipe, a finished one, or one still running.
    ``reuse`` (a stage of a pipeline being continued): a completed run of the same recipe
    is returned as ``(env, COMPLETED)``, to be used as it is."""
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
        raise RunDirError(f"{run_dir}: cannot read the run to resume: {exc}") from exc
    status = env.get("status")
    if status == "completed" and reuse and resume_key(saved) == resume_key(recipe):
        return env, COMPLETED
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
    from dlcli.rundir import owner_alive

    return owner_alive(env.get("host"), env.get("pid"))


def _differences(a, b, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if prefix == "train." and k in _WHERE:
                continue
            out += _differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} -> {b!r}"]


class signals_to:
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



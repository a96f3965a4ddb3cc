"""Run directories: creation rules, environment record, atomic artifacts."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from dlcli.errors import RunDirError

RUN_MARKERS = ("env.json", "recipe.yaml")
RUN_FORMAT = "dlcli-run/1"  # env.json's "format": the marker that dlcli made a folder
# what dlcli writes at the top of a run directory: all that --overwrite ever removes
RUN_ENTRIES = frozenset({
    "env.json", "recipe.yaml", "model.keras", "preprocessing.json", "labels.txt", "metrics.json",
    "history.csv", "checkpoints", "tensorboard", "export", "data-cache", "sparsity.json", "distill.json",
    "pipeline.json", "pruned", "distilled", "student-alone", "report.html", "report_files", "benchmark.json",
    "judge", "discriminator.keras", "samples", "anomaly.json", ".write-test",
})


def default_run_dir(name: str, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"{name}-{stamp}-{n}"
    return path


def owner_alive(host, pid) -> bool:
    """Whether process ``pid`` on ``host`` still runs: only this host can tell (False for
    another host, a missing pid, or this very process)."""
    if host != platform.node() or not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def is_run_dir(path: Path) -> bool:
    """Whether dlcli made ``path``: its env.json is dlcli's (the format tag, or the keys every
    env.json written before the tag has)."""
    env = Path(path) / "env.json"
    try:
        if not env.is_file() or env.stat().st_size > 1 << 20:
            return False
        doc = json.loads(env.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(doc, dict):
        return False
    return str(doc.get("format", "")).startswith("dlcli-run/") or {"dlcli", "tensorflow", "argv", "status"} <= set(doc)


def _refuse_protected(path: Path, protect: list[Path]) -> None:
    """Never a run directory: the current directory, the home directory, the file system
    root, or a folder that holds the recipe or the data."""
    target = path.resolve()
    named = {Path.cwd().resolve(): "the current directory", Path.home().resolve(): "the home directory",
             Path(target.anchor): "the file system root"}
    if target in named:
        raise RunDirError(f"{path}: is {named[target]}; refusing to use it as a run directory (--run-dir)")
    for p in protect:
        p = Path(p).resolve()
        if p == target or target in p.parents:
            raise RunDirError(f"{path}: holds {p}; refusing to use it as a run directory (--run-dir)")


def prepare_run_dir(path: str | Path, overwrite: bool = False, protect: list[Path] | None = None) -> Path:
    """Create (or, with overwrite, clear of what dlcli wrote) a run directory; refuse anything
    else. ``protect``: the recipe and data files, which no run directory may hold."""
    path = Path(path)
    _refuse_protected(path, list(protect or []))
    if path.exists():
        if not path.is_dir():
            raise RunDirError(f"{path}: exists and is not a directory")
        if any(path.iterdir()):
            if not overwrite:
                raise RunDirError(f"{path}: run directory already exists and is not empty (pass --overwrite to replace it)")
            if not is_run_dir(path):
                raise RunDirError(
                    f"{path}: not a dlcli run directory (no env.json written by dlcli); refusing to delete it "
                    "with --overwrite"
                )
            _clear_run(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"{path}: cannot write the run directory: {exc.strerror or exc}") from exc
    return path


def _clear_run(path: Path) -> None:
    """Remove what dlcli writes in a run directory; anything else there is left alone."""
    for child in path.iterdir():
        if child.name not in RUN_ENTRIES:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def environment() -> dict[str, Any]:
    import keras
    import numpy
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices()]
    return {
        "format": RUN_FORMAT,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": numpy.__version__,
        "dlcli": __import__("dlcli").__version__,
        "devices": devices,
        "argv": sys.argv,
        "hostname": platform.node(),
        "pid": os.getpid(),
    }

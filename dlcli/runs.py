"""Run directories: creation rules, environment record, atomic artifacts."""

from __future__ import annotations

import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from dlcli.errors import RunDirError

RUN_MARKERS = ("env.json", "recipe.yaml")


def default_run_dir(name: str, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{name}-{stamp}"
    n = 1
    while path.exists():
        n += 1
        path = Path(root) / f"{name}-{stamp}-{n}"
    return path


def is_run_dir(path: Path) -> bool:
    return any((path / m).exists() for m in RUN_MARKERS)


def prepare_run_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Create (or, with overwrite, empty) a run directory; refuse anything else."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise RunDirError(f"{path}: exists and is not a directory")
        if any(path.iterdir()):
            if not overwrite:
                raise RunDirError(f"{path}: run directory already exists and is not empty (pass --overwrite to replace it)")
            if not is_run_dir(path):
                raise RunDirError(
                    f"{path}: not a dlcli run directory (no env.json or recipe.yaml); refusing to delete it with --overwrite"
                )
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RunDirError(f"{path}: cannot write the run directory: {exc.strerror or exc}") from None
    return path


def environment() -> dict[str, Any]:
    import keras
    import numpy
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_logical_devices()]
    return {
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

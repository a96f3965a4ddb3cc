"""Resumable checkpoints: everything needed to continue a run exactly where it stopped.

A checkpoint is a folder, written under a temporary name and renamed when complete::

    checkpoints/resume/ckpt-E0003-S000012/
        model.keras   the model with its optimizer state (loadable on its own, safe mode)
        arrays.npz    every model variable (random-seed states included, which model.keras
                      leaves out), optimizer and metric variables, callback arrays
        state.json    epoch, step, callback states, history rows, recipe hash, fit time

``E``/``S`` are the epoch to continue and the steps of it already done. Each file is
fsynced, then the folder, then it is renamed and its parent fsynced. The previous
checkpoint is deleted only after the new one is in place, so a kill at any instant
leaves at least one complete checkpoint; leftover temporary folders are ignored and
cleared. ``checkpoints/last.keras`` is a hard link to the newest checkpoint's model.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.atomic import _fsync_dir

RESUME = "resume"
_NAME = re.compile(r"^ckpt-E(\d{4,})-S(\d{6,})$")


@dataclass
class Snapshot:
    """A checkpoint in host memory: variable values and plain state, not yet on disk."""

    epoch: int
    step: int
    arrays: dict[str, np.ndarray]
    state: dict[str, Any]

    @property
    def name(self) -> str:
        return f"ckpt-E{self.epoch:04d}-S{self.step:06d}"


@dataclass
class Checkpoint:
    path: Path
    epoch: int
    step: int
    state: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    def arrays(self) -> dict[str, np.ndarray]:
        with np.load(self.path / "arrays.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def write(folder: Path, snap: Snapshot, save_model) -> Path:
    """Write ``snap`` as a complete checkpoint folder under ``folder/resume``; returns it.

    ``save_model(path)`` writes the model (with the snapshot's values) to ``path``.
    """
    root = folder / RESUME
    root.mkdir(parents=True, exist_ok=True)
    final = root / snap.name
    if final.exists():  # the same epoch and step again (a signal right after a periodic write)
        return final
    tmp = root / f".{snap.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_model(tmp / "model.keras")
        with open(tmp / "arrays.npz", "wb") as fh:
            np.savez(fh, **snap.arrays)
        (tmp / "state.json").write_text(json.dumps(snap.state, indent=1) + "\n", encoding="utf-8")
        for f in tmp.iterdir():
            _fsync_file(f)
        _fsync_dir(tmp)
        os.rename(tmp, final)
        _fsync_dir(root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _link_last(final / "model.keras", folder / "last.keras")
    for old in complete(folder):
        if old.path != final:
            shutil.rmtree(old.path, ignore_errors=True)
    return final


def _link_last(source: Path, target: Path) -> None:
    """``target`` becomes the same file as ``source`` (a hard link, else a copy), atomically."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(source, tmp)
    except OSError:  # no hard links here (some network filesystems)
        shutil.copyfile(source, tmp)
        _fsync_file(tmp)
    os.replace(tmp, target)
    _fsync_dir(target.parent)


def complete(folder: Path) -> list[Checkpoint]:
    """Every complete checkpoint under ``folder/resume``, oldest first."""
    root = folder / RESUME
    out = []
    if not root.is_dir():
        return out
    for d in root.iterdir():
        m = _NAME.match(d.name)
        if not m or not d.is_dir():
            continue
        try:
            state = json.loads((d / "state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if (d / "arrays.npz").is_file() and (d / "model.keras").is_file():
            out.append(Checkpoint(d, int(m.group(1)), int(m.group(2)), state))
    return sorted(out, key=lambda c: (c.epoch, c.step))


def latest(folder: Path) -> Checkpoint | None:
    found = complete(folder)
    return found[-1] if found else None


def clear_partial(folder: Path) -> None:
    """Remove temporary folders a killed writer left behind."""
    root = folder / RESUME
    if root.is_dir():
        for d in root.iterdir():
            if d.name.startswith(".") and ".tmp-" in d.name:
                shutil.rmtree(d, ignore_errors=True)

"""Run directories, the one place that knows them: the rules for making one (a fresh
folder, or one dlcli made, never a user's), the environment record, and :class:`RunDir`, a
finished run opened (its recipe, fitted preprocessing, env.json, the model in Keras safe
mode, its splits) together with the artifacts exported from it."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlcli.data.preprocess import Preprocessor
from dlcli.errors import RunDirError, raise_if_bug

RUN_MARKERS = ("env.json", "recipe.yaml")
BESIDE = ("preprocessing.json", "labels.txt", "anomaly.json")  # what a model of a run needs beside it
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


def made_by_dlcli(path: Path) -> bool:
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


def finalize(run_dir: Path, env: dict[str, Any], status: str, **fields) -> None:
    """Record how a run ended in its env.json: ``status`` (completed, failed, diverged,
    interrupted), the end time and ``fields`` (error, interrupted, metrics of the end)."""
    from dlcli.atomic import write_json

    env.update(status=status, ended=time.strftime("%Y-%m-%dT%H:%M:%S%z"), **fields)
    write_json(Path(run_dir) / "env.json", env)


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
            if not made_by_dlcli(path):
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


@dataclass
class RunDir:
    path: Path
    recipe: Any
    preprocessor: Preprocessor
    env: dict[str, Any]

    @property
    def model_path(self) -> Path:
        return self.path / "model.keras"

    def split_names(self) -> list[str]:
        """The splits this run was trained with, in order (train, validation, test)."""
        sizes = self.env.get("data_sizes") or {"train": 0}
        return [s for s in ("train", "validation", "test") if s in sizes]

    def load_model(self, path: Path | None = None):
        return load_keras_model(path or self.model_path)

    @classmethod
    def open(cls, path: str | Path, overrides: list[str] | None = None) -> RunDir:
        """A finished run (see :func:`open_run`)."""
        return open_run(path, overrides)

    @property
    def status(self) -> str | None:
        """env.json's status: completed, interrupted, failed, running (None before env.json)."""
        return self.env.get("status")

    def split(self, name: str, **kwargs):
        """(x, y) of one split through the run's saved preprocessing (see :func:`run_split`)."""
        return run_split(self, name, **kwargs)

    def copy_beside(self, out: Path) -> None:
        """What a device needs beside a model of this run: preprocessing, labels, an anomaly threshold."""
        from dlcli.atomic import copy_file

        for name in BESIDE:
            if (self.path / name).exists() and Path(out).resolve() != self.path.resolve():
                copy_file(self.path / name, Path(out) / name)


def load_keras_model(path: Path):
    """``keras.saving.load_model`` in safe mode (no lambda / arbitrary code)."""
    import keras

    import dlcli.models.custom_layers  # noqa: F401  (registers dlcli's layers)

    if not Path(path).exists():
        raise RunDirError(f"{path}: model file not found")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:
        raise_if_bug(exc)
        raise RunDirError(f"{path}: cannot load the model: {str(exc).splitlines()[0]}") from exc


def _manifest_of(artifact: Path) -> tuple[Path, dict] | None:
    for folder in (artifact.parent, artifact.parent.parent):
        manifest = folder / "manifest.json"
        if manifest.exists():
            try:
                return folder, json.loads(manifest.read_text())
            except ValueError as exc:
                raise RunDirError(f"{manifest}: cannot read the export manifest: {exc}") from exc
    return None


def find_artifact_run(artifact: Path) -> RunDir:
    """The run an exported artifact came from, through the manifest beside it (the run it
    names, or, in a moved checkout, the run folder that holds the export folder)."""
    found = _manifest_of(Path(artifact))
    if found is None:
        raise RunDirError(f"{artifact}: no manifest.json beside it names its run; export it with `dlcli export`")
    folder, manifest = found
    named = Path(manifest.get("run_dir", ""))
    return open_run(named if is_finished_run(named) or not is_finished_run(folder.parent) else folder.parent)


def load_artifact(artifact: str | Path, allow_code: bool = False, threads: int | None = None):
    """The runtime of an exported artifact. A SavedModel runs a TensorFlow graph of its own:
    one that dlcli did not export (listed, with this sha256, in the manifest beside it) is
    loaded only with ``allow_code``, like a TFSMLayer in a recipe."""
    from dlcli.errors import UsageError
    from dlcli.export.registry import format_of

    artifact = Path(artifact)
    fmt = format_of(artifact)
    if fmt.name == "saved_model" and not allow_code and not _exported_by_dlcli(artifact):
        raise UsageError(f"{artifact}: a SavedModel that dlcli did not export (no manifest.json beside it lists it "
                         "with this sha256) runs its own graph; pass --allow-code to run it")
    return fmt.load(artifact, threads=threads)


def _exported_by_dlcli(artifact: Path) -> bool:
    from dlcli.export import sha256_path

    found = _manifest_of(artifact)
    if found is None:
        return False
    folder, manifest = found
    target = artifact.resolve()
    for a in manifest.get("artifacts", []) if isinstance(manifest, dict) else []:
        if isinstance(a, dict) and isinstance(a.get("path"), str) and (folder / a["path"]).resolve() == target:
            return a.get("sha256") == sha256_path(artifact)[0]
    return False


def artifact_part(artifact: Path) -> str | None:
    """Which part of its run an exported artifact is (``decoder``: a VAE's), from its manifest."""
    found = _manifest_of(Path(artifact))
    return found[1].get("part") if found is not None and isinstance(found[1], dict) else None


def takes_raw(artifact: Path) -> bool:
    """Whether an exported artifact has the run's preprocessing inside (it is fed raw values)."""
    found = _manifest_of(Path(artifact))
    if found is None:
        return False
    name = Path(artifact).name
    entry = next((a for a in found[1].get("artifacts", []) if a.get("path") == name or a.get("name") == name), {})
    return entry.get("preprocessing") == "included"


def is_finished_run(path: Path) -> bool:
    """Whether ``path`` holds a finished run (its recipe and model), as opposed to an artifact."""
    return Path(path).is_dir() and (Path(path) / "recipe.yaml").exists() and (Path(path) / "model.keras").exists()


def run_split(run: RunDir, split: str, return_files: bool = False, pick=None, normalize: bool = True,
              raw_labels: bool = False):
    """(x, y) of one split of the run's data, through the run's saved preprocessing
    (and the data files read, with ``return_files``). ``pick(n) -> row indices``: only
    those rows are decoded (a bounded sample of a large split). ``normalize=False``: the
    featurized values before reshape and normalization (for a model exported with them).
    ``raw_labels``: also the labels as read (e.g. what marks a reconstruction run's anomalies)."""
    import numpy as np

    from dlcli.data import data_task, keep_normal, raw_inputs, read_raw_splits
    from dlcli.errors import UsageError

    recipe, pre = run.recipe, run.preprocessor
    raws, files = read_raw_splits(recipe.data, Path("."), recipe.seed, data_task(recipe))
    raws = keep_normal(recipe, raws)
    if split not in raws:
        raise UsageError(f"this run has no {split} split (it has: {', '.join(raws)})")
    raw = raws[split] if pick is None else raws[split].take(np.asarray(pick(len(raws[split])), np.int64))
    x = pre.transform_x(raw_inputs(recipe.data, raw), normalize)
    y = np.asarray(x if recipe.task == "reconstruction" else pre.encode_y(raw.y, split))
    if raw_labels:
        return x, y, raw.y
    return (x, y, files) if return_files else (x, y)


def run_data(run: RunDir, split: str):
    """One split of the run's data as the trainer reads it (streamed for folder sources),
    through the run's saved preprocessing, and the data files."""
    from dlcli.data import load_data
    from dlcli.errors import UsageError

    bundle = load_data(run.recipe, preprocessor=run.preprocessor)
    if split not in bundle.splits:
        raise UsageError(f"this run has no {split} split (it has: {', '.join(bundle.splits)})")
    return bundle.splits[split], bundle


def open_run(path: str | Path, overrides: list[str] | None = None) -> RunDir:
    """A finished run; ``overrides`` (``--set KEY=VALUE``) apply to its recipe as read."""
    from dlcli.recipe.loader import load_recipe

    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: run directory not found")
    for name in ("recipe.yaml", "preprocessing.json", "model.keras"):
        if not (path / name).exists():
            raise RunDirError(f"{path}: not a finished dlcli run ({name} is missing)")
    recipe = load_recipe(path / "recipe.yaml", overrides)
    env = {}
    if (path / "env.json").exists():
        env = json.loads((path / "env.json").read_text())
    return RunDir(path, recipe, Preprocessor.load(path / "preprocessing.json"), env)

"""Open a finished run: its recipe, preprocessing and model (Keras safe mode)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlcli.data.preprocess import Preprocessor
from dlcli.errors import RunDirError


@dataclass
class Run:
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


def load_keras_model(path: Path):
    """``keras.saving.load_model`` in safe mode (no lambda / arbitrary code)."""
    import keras

    import dlcli.models.custom_layers  # noqa: F401  (registers dlcli's layers)

    if not Path(path).exists():
        raise RunDirError(f"{path}: model file not found")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as exc:
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


def find_artifact_run(artifact: Path) -> Run:
    """The run an exported artifact came from, through the manifest beside it (the run it
    names, or, in a moved checkout, the run folder that holds the export folder)."""
    found = _manifest_of(Path(artifact))
    if found is None:
        raise RunDirError(f"{artifact}: no manifest.json beside it names its run; export it with `dlcli export`")
    folder, manifest = found
    named = Path(manifest.get("run_dir", ""))
    return open_run(named if is_run_dir(named) or not is_run_dir(folder.parent) else folder.parent)


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


def is_run_dir(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "recipe.yaml").exists() and (Path(path) / "model.keras").exists()


def run_split(run: Run, split: str, return_files: bool = False, pick=None, normalize: bool = True,
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


def run_data(run: Run, split: str):
    """One split of the run's data as the trainer reads it (streamed for folder sources),
    through the run's saved preprocessing, and the data files."""
    from dlcli.data import load_data
    from dlcli.errors import UsageError

    bundle = load_data(run.recipe, preprocessor=run.preprocessor)
    if split not in bundle.splits:
        raise UsageError(f"this run has no {split} split (it has: {', '.join(bundle.splits)})")
    return bundle.splits[split], bundle


def open_run(path: str | Path, overrides: list[str] | None = None) -> Run:
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
    return Run(path, recipe, Preprocessor.load(path / "preprocessing.json"), env)

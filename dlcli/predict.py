"""``predict(run_dir, input)``: raw input -> training preprocessing -> model -> readable output.

INPUT may be ``.npy`` / ``.npz`` (numeric features, one example or a batch), ``.csv``
(same columns as the training CSV; a label column is ignored), an image file or a
folder of images, or ``.txt`` (one text per line) for text runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlcli.errors import DataError

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif"}


@dataclass
class Prediction:
    inputs: list[str]
    outputs: np.ndarray
    labels: list[str] | None
    top_k: int
    value_range: tuple[float, float] | None = None  # a generator's: how its samples map to pixels
    anomaly: dict[str, Any] | None = None  # a reconstruction run with anomaly.json: scores and threshold

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for i, (name, out) in enumerate(zip(self.inputs, self.outputs, strict=True)):
            if self.anomaly is not None:
                rows.append({"input": name, "score": float(self.anomaly["scores"][i]),
                             "anomaly": bool(self.anomaly["scores"][i] > self.anomaly["threshold"]),
                             "output": np.asarray(out).tolist()})
            elif self.labels:
                order = np.argsort(-out)[: self.top_k]
                rows.append({"input": name, "label": self.labels[order[0]],
                             "top": [{"label": self.labels[i], "probability": float(out[i])} for i in order]})
            else:
                rows.append({"input": name, "output": np.asarray(out).tolist()})
        return rows

    def to_json(self) -> dict[str, Any]:
        return {"predictions": self.rows()}

    def save(self, path: Path) -> None:
        """Every output whole, with the input names, as one .npz (written atomically)."""
        from dlcli.atomic import atomic_path

        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, outputs=np.asarray(self.outputs), inputs=np.asarray(self.inputs, dtype=str))


def _numeric(path: Path, pre, normalize: bool = True) -> np.ndarray:
    import zipfile

    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not z.files:
                    raise DataError(f"{path}: the .npz holds no arrays")
                arr = z["x" if "x" in z else z.files[0]]
        else:  # mapped: a header that claims more data than the file holds fails here, unallocated
            arr = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError, MemoryError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read NumPy input: {' '.join(str(exc).split())[:200]}") from exc
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{path}: holds {arr.dtype} values; the model takes numbers")
    if arr.size == 0:
        raise DataError(f"{path}: holds no examples")
    shape = tuple(pre.input_shape)
    flat = int(np.prod(shape))
    if arr.shape == shape or (arr.ndim == 1 and arr.size == flat and len(shape) > 1):
        arr = arr[None]
    arr = arr.reshape((arr.shape[0], *shape)) if arr.ndim >= 1 and arr[0].size == flat else arr
    if tuple(arr.shape[1:]) != shape:
        raise DataError(f"{path}: input examples have shape {tuple(arr.shape[1:])}, the model expects {shape}")
    if pre.input_dtype == "int32":
        return arr.astype(np.int32)
    if not normalize:  # an artifact with the preprocessing inside: the values before reshape
        return (arr.reshape(len(arr), -1) if pre.reshape else arr).astype(np.float32)
    return pre.normalize_array(arr.astype(np.float32))


def read_input(path: Path, run, normalize: bool = True) -> tuple[np.ndarray, list[str]]:
    """Preprocessed model input for ``path`` and a name per example (``normalize=False``:
    featurized only, for an artifact exported with its preprocessing); errors name ``path``."""
    from dlcli.data.featurize import reading

    with reading(path):
        return _read_input(path, run, normalize)


def _read_input(path: Path, run, normalize: bool = True) -> tuple[np.ndarray, list[str]]:
    from dlcli.data.inputs import num_rows
    from dlcli.data.sources import read_csv_columns

    pre, spec = run.preprocessor, run.recipe.data
    kind = pre.featurizer.kind
    if not path.exists():
        raise DataError(f"{path}: input not found")
    if not path.is_dir() and not path.is_file():
        raise DataError(f"{path}: not a regular file or folder (a device or a pipe?)")
    if isinstance(pre.input_shape, dict):  # several named inputs, from CSV columns
        if path.suffix not in (".csv", ".gz"):
            raise DataError(f"{path}: a run with several inputs ({', '.join(pre.input_shape)}) predicts from a "
                            "CSV file with their columns")
        x = pre.transform_x(read_csv_columns(path, spec.header, spec.delimiter, spec.skip_rows), normalize)
        return x, [f"{path.name}:{i + 1}" for i in range(num_rows(x))]
    if path.suffix in (".npy", ".npz"):
        x = _numeric(path, pre, normalize)
        return x, [f"{path.name}[{i}]" for i in range(len(x))]
    if kind == "image":
        files = [path] if path.is_file() else sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise DataError(f"{path}: no images found")
        return pre.transform_x([str(f) for f in files], normalize), [str(f) for f in files]
    if kind == "text":
        if path.suffix == ".csv":
            cols = read_csv_columns(path, True, ",")
            if spec.text_column not in cols:
                raise DataError(f"{path}: column {spec.text_column!r} not found")
            texts = cols[spec.text_column]
        else:
            texts = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return pre.transform_x(texts, normalize), list(texts)
    if kind == "tabular" and path.suffix in (".csv", ".gz"):
        cols = read_csv_columns(path, spec.header, spec.delimiter, spec.skip_rows)
        label = str(spec.label_column)
        if not spec.header and len(cols) == len(pre.featurizer.columns) + 1:
            # headerless input that still carries the label column: drop it by position
            names = list(cols)
            idx = spec.label_column if spec.label_column >= 0 else len(names) + spec.label_column
            label = names[idx]
        cols.pop(label, None)
        if not spec.header:
            cols = {name: values for name, values in zip(pre.featurizer.columns, cols.values(), strict=True)}
        x = pre.transform_x(cols, normalize)
        return x, [f"{path.name}:{i + 1}" for i in range(len(x))]
    raise DataError(f"{path}: unsupported input for a {kind} run (use .npy, .npz, .csv, images or .txt)")


def _check_finite(x, path: Path) -> None:
    """Predictions from NaN or infinite inputs would look confident and mean nothing."""
    for name, arr in (x.items() if isinstance(x, dict) else [("", x)]):
        arr = np.asarray(arr)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            row = int(np.argwhere(~np.isfinite(arr))[0][0])
            where = f"input {name!r}, " if name else ""
            raise DataError(f"{path}: {where}example {row + 1} holds NaN or infinity")


def predict(path: str | Path, input_path: str | Path, top_k: int = 3, allow_code: bool = False,
            label: str | None = None, seed: int | None = None) -> Prediction:
    """``path``: a run directory (its Keras model) or an exported artifact (its runtime;
    a SavedModel dlcli did not export only with ``allow_code``). A GAN run's generator
    takes a number of samples or latent vectors (:mod:`dlcli.gan.sample`; ``label``, ``seed``)."""
    from dlcli.errors import UsageError
    from dlcli.rundir import artifact_part, find_artifact_run, is_finished_run, load_artifact, open_run, takes_raw

    path = Path(path)
    artifact = not is_finished_run(path)
    runner = load_artifact(path, allow_code) if artifact else None
    run = find_artifact_run(path) if artifact else open_run(path)
    if artifact and artifact_part(path) == "decoder" and label is None:  # a VAE's decoder: latents in
        return _vae_samples(run, str(input_path), seed, runner)
    if run.recipe.task == "gan":
        from dlcli.gan.sample import generator_inputs

        x, names = generator_inputs(run, str(input_path), label, seed)
    elif (not artifact and label is None and getattr(run.recipe.model, "architecture", None) == "vae"
          and str(input_path).isdigit()):  # a VAE run with a count: samples of its decoder
        return _vae_samples(run, str(input_path), seed)
    elif label is not None or seed is not None:
        raise UsageError("--label and --seed apply to generators only (a GAN run or artifact; --seed also to a "
                         "VAE run drawing N samples)")
    else:
        x, names = read_input(Path(input_path), run, normalize=not (artifact and takes_raw(path)))
        _check_finite(x, Path(input_path))
    out = runner.predict(x) if artifact else np.asarray(run.load_model().predict(x, verbose=0, batch_size=256))
    labels = run.preprocessor.labels if run.recipe.task == "classification" else None
    pred = Prediction(names, out, labels, max(1, min(top_k, len(labels) if labels else 1)))
    if run.recipe.anomaly is not None and not (artifact and takes_raw(path)):
        _flag(pred, run, x)
    if run.recipe.task == "gan":
        pred.value_range = tuple((run.env.get("gan") or {}).get("value_range") or (-1.0, 1.0))
    return pred


def _vae_samples(run, text: str, seed: int | None, runner=None) -> Prediction:
    """New examples from a VAE run's decoder, Keras's or an exported one (``runner``)."""
    from dlcli.gan.sample import vae_decoder, vae_samples

    decoder = runner if runner is not None else vae_decoder(run.load_model())
    out, names = vae_samples(decoder, text, run.recipe.seed if seed is None else seed)
    pred = Prediction(names, out, None, 1)
    pred.value_range = (float(min(0.0, out.min())), float(max(1.0, out.max())))
    return pred


def _flag(pred: Prediction, run, x) -> None:
    """Each example's reconstruction error and whether it exceeds the run's calibrated threshold."""
    from dlcli.anomaly import errors, load

    calibrated = load(run.path)
    if calibrated is not None:
        pred.anomaly = {"threshold": float(calibrated["threshold"]), "score": calibrated["score"],
                        "scores": errors(pred.outputs, x, calibrated["score"])}

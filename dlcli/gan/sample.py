"""``dlcli predict`` on a generator (a GAN's, or a VAE's decoder): INPUT is a count of
samples to draw (seeded standard normal latents) or a .npy / .npz of latent vectors (an
.npz may hold ``latent`` and ``label``); a conditional generator draws the classes in turn,
or one class (``label``). ``--out DIR`` writes one PNG per sample, ``grid.png`` and
``samples.npz``."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from dlcli.errors import DataError, UsageError

MAX_SAMPLES = 100_000


def _label_id(label: str, labels: list[str]) -> int:
    if label in labels:
        return labels.index(label)
    if label.isdigit() and int(label) < len(labels):
        return int(label)
    raise UsageError(f"--label {label!r}: not a class of this run ({', '.join(labels[:20])})")


def _latents(text: str, latent_dim: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    if text.isdigit():
        n = int(text)
        if not 1 <= n <= MAX_SAMPLES:
            raise UsageError(f"INPUT {text}: draw between 1 and {MAX_SAMPLES:,} samples")
        return np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32), None
    path = Path(text)
    if path.suffix not in (".npy", ".npz") or not path.is_file():
        raise UsageError(f"INPUT {text}: a generator takes a number of samples or a .npy / .npz of latent vectors")
    try:
        data = np.load(path, allow_pickle=False)
        z, given = (data, None) if path.suffix == ".npy" else (data["latent"], data.get("label"))
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: cannot read latent vectors (an .npz needs an array `latent`): {exc}") from exc
    z = np.asarray(z, np.float32).reshape(-1, latent_dim) if np.size(z) % latent_dim == 0 else None
    if z is None or not np.isfinite(z).all():
        raise DataError(f"{path}: expected finite latent vectors of {latent_dim} values each")
    return z, None if given is None else np.asarray(given, np.int32).reshape(-1, 1)


def generator_inputs(run, text: str, label: str | None, seed: int | None):
    """The generator's inputs for INPUT ``text`` and a name per sample."""
    spec, labels = run.recipe.model.gan, run.preprocessor.labels or []
    z, given = _latents(text, spec.latent_dim, run.recipe.seed if seed is None else seed)
    names = [f"sample-{i + 1}" for i in range(len(z))]
    if not spec.conditional:
        if label is not None:
            raise UsageError("--label: this generator is not conditional")
        return z, names
    if label is not None:
        ids = np.full((len(z), 1), _label_id(label, labels), np.int32)
    elif given is not None and len(given) == len(z):
        ids = given
    else:
        ids = (np.arange(len(z)) % len(labels)).astype(np.int32).reshape(-1, 1)
    if ids.min() < 0 or ids.max() >= len(labels):
        raise DataError(f"INPUT {text}: labels must be class ids 0..{len(labels) - 1}")
    return {"latent": z, "label": ids}, [f"{n} ({labels[int(i)]})" for n, i in zip(names, ids[:, 0], strict=True)]


def write_samples(out: Path, samples: np.ndarray, value_range: tuple[float, float]) -> list[Path]:
    """One PNG per sample, a grid and the arrays, into folder ``out`` (each file atomically;
    nothing else in the folder is touched)."""
    from dlcli.atomic import atomic_path, write_bytes
    from dlcli.gan.scoring import grid_png

    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    width = len(str(len(samples)))
    for i, s in enumerate(samples):
        written.append(write_bytes(out / f"sample-{i + 1:0{width}d}.png", grid_png(s[None], 1, value_range)))
    side = min(16, math.ceil(math.sqrt(len(samples))))
    written.append(write_bytes(out / "grid.png", grid_png(samples[:side * side], side, value_range)))
    with atomic_path(out / "samples.npz", suffix=".npz") as tmp:
        np.savez(tmp, outputs=samples)
    return [*written, out / "samples.npz"]


def vae_decoder(model):
    """The nested ``decoder`` of a dlcli VAE (architecture vae), else None."""
    names = {layer.name for layer in model.layers}
    return model.get_layer("decoder") if {"decoder", "vae_sampling"} <= names else None


def vae_samples(decoder, text: str, seed: int) -> tuple[np.ndarray, list[str]]:
    """Samples of a VAE's decoder (a Keras model or an exported artifact's runner) for INPUT
    ``text`` (a count or latent vectors)."""
    shape = decoder.inputs[0].shape
    z, _ = _latents(text, int(shape[-1]), seed)
    names = [f"sample-{i + 1}" for i in range(len(z))]
    if hasattr(decoder, "layers"):  # Keras
        return np.asarray(decoder.predict(z, verbose=0, batch_size=256)), names
    return np.asarray(decoder.predict(z)), names

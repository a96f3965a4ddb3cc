"""Per-epoch judgement of a generator: a callback that adds the Frechet distance (and the
conditional class accuracy) to the epoch's logs, before early stopping, checkpoints and
the history read them, and writes the epoch's sample grid (RUN_DIR/samples/)."""

from __future__ import annotations

import io
from pathlib import Path

import keras
import numpy as np

from dlcli.gan.judge import Judge, frechet_distance

SAMPLES_DIR = "samples"


def split_arrays(split) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of a data split as arrays, in order."""
    xs, ys = [], []
    for batch in split.dataset(256):
        xs.append(np.asarray(batch[0]))
        ys.append(np.asarray(batch[1]))
    return np.concatenate(xs), np.concatenate(ys)


def latent_inputs(spec, n: int, seed: int, num_classes: int):
    """``n`` fixed generator inputs: standard normal latents (and class ids in turn)."""
    z = np.random.default_rng(seed).standard_normal((n, spec.latent_dim)).astype(np.float32)
    if not spec.conditional:
        return z
    return {"latent": z, "label": (np.arange(n) % num_classes).astype(np.int32).reshape(-1, 1)}


def grid_png(images: np.ndarray, side: int, value_range: tuple[float, float]) -> bytes:
    """A side x side mosaic of images (H, W, C with C 1 or 3; flat ones shown as a row) as PNG."""
    from matplotlib.image import imsave

    lo, hi = value_range
    imgs = np.clip((np.asarray(images, np.float64) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    if imgs.ndim == 2:
        imgs = imgs[:, None, :, None]
    if imgs.ndim == 3:
        imgs = imgs[..., None]
    n, h, w, c = imgs.shape
    c = 3 if c >= 3 else 1
    pad = 1
    canvas = np.ones((side * (h + pad) + pad, side * (w + pad) + pad, c))
    for i in range(min(n, side * side)):
        r, col = divmod(i, side)
        canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = \
            imgs[i, ..., :c]
    scale = max(1, 256 // canvas.shape[0])  # small images: enlarged, nearest neighbour
    canvas = canvas.repeat(scale, 0).repeat(scale, 1)
    buf = io.BytesIO()
    imsave(buf, canvas[..., 0] if c == 1 else canvas, cmap="gray" if c == 1 else None, vmin=0.0, vmax=1.0, format="png")
    return buf.getvalue()


class GanScore(keras.callbacks.Callback):
    """``[val_]frechet_distance`` (generated vs real features of the validation split, else
    the training split) and, conditional, ``class_accuracy``: the judge's accuracy on
    generated examples of each class in turn. Fixed latents: epochs compare like with like."""

    def __init__(self, generator, judge: Judge, real_features: np.ndarray, spec, num_classes: int, seed: int,
                 value_range: tuple[float, float], prefix: str, run_dir: Path | None):
        super().__init__()
        self.generator, self.judge, self.real = generator, judge, real_features
        self.spec, self.num_classes, self.prefix, self.run_dir = spec, num_classes, prefix, run_dir
        self.value_range = value_range
        self.inputs = latent_inputs(spec, spec.score_samples, seed + 7, num_classes)
        self.grid_inputs = latent_inputs(spec, spec.grid * spec.grid, seed + 11, num_classes)

    def judged(self) -> tuple[np.ndarray | None, float | None]:
        """The judge's features of the fixed latents' samples (None if any is not finite) and,
        conditional, its accuracy on them."""
        fake = np.asarray(self.generator.predict(self.inputs, batch_size=256, verbose=0))
        if not np.all(np.isfinite(fake)):
            return None, None
        accuracy = self.judge.accuracy(fake, self.inputs["label"]) if self.spec.conditional else None
        return self.judge.features(fake), accuracy

    def scores(self) -> dict[str, float]:
        features, accuracy = self.judged()
        distance = float("nan") if features is None else frechet_distance(features, self.real)
        out = {f"{self.prefix}frechet_distance": distance}
        if accuracy is not None:
            out["class_accuracy"] = accuracy
        return out

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs.update(self.scores())
        if self.run_dir is not None:
            self.write_grid(self.run_dir / SAMPLES_DIR / f"epoch-{epoch + 1:03d}.png")

    def write_grid(self, path: Path) -> None:
        from dlcli.atomic import write_bytes

        images = np.asarray(self.generator.predict(self.grid_inputs, verbose=0))
        if np.all(np.isfinite(images)):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(path, grid_png(images, self.spec.grid, self.value_range))

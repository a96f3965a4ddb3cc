"""tf.data input pipelines. Augmentation lives here, so it never reaches a model."""

from __future__ import annotations

import numpy as np

from dlcli.errors import DataError


def build_augmenter(spec, input_shape: tuple[int, ...], value_range: tuple[float, float], seed: int):
    """A callable batch -> batch applying the recipe's augmentation (None if none)."""
    if not spec.enabled():
        return None
    import keras
    import tensorflow as tf

    image_ops = spec.flip != "none" or spec.rotation or spec.zoom or spec.translation or spec.contrast or spec.brightness
    if image_ops and len(input_shape) != 3:
        raise DataError(
            f"data.augment: flip/rotation/zoom/translation/contrast/brightness need images "
            f"(height, width, channels); the data has shape {tuple(input_shape)}"
        )
    layers = []
    if spec.flip != "none":
        mode = {"horizontal": "horizontal", "vertical": "vertical", "both": "horizontal_and_vertical"}[spec.flip]
        layers.append(keras.layers.RandomFlip(mode, seed=seed))
    if spec.rotation:
        layers.append(keras.layers.RandomRotation(spec.rotation, fill_mode="constant", seed=seed + 1))
    if spec.zoom:
        layers.append(keras.layers.RandomZoom(spec.zoom, fill_mode="constant", seed=seed + 2))
    if spec.translation:
        layers.append(keras.layers.RandomTranslation(spec.translation, spec.translation, fill_mode="constant", seed=seed + 3))
    if spec.contrast:
        layers.append(keras.layers.RandomContrast(spec.contrast, value_range=value_range, seed=seed + 4))
    if spec.brightness:
        layers.append(keras.layers.RandomBrightness(spec.brightness, value_range=value_range, seed=seed + 5))
    noise = float(spec.noise)
    gen = tf.random.Generator.from_seed(seed + 6) if noise else None

    def augment(x, y):
        for layer in layers:
            x = layer(x, training=True)
        if gen is not None:
            x = x + gen.normal(tf.shape(x), stddev=noise, dtype=x.dtype)
        return x, y

    return augment


def _check_augmentable(x, augment) -> None:
    if augment is not None and np.asarray(x).dtype.kind in "iub":
        raise DataError(f"data.augment: the inputs are integers (dtype {np.asarray(x).dtype}, e.g. token ids); "
                        "augmentation needs float inputs")


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, training: bool, pipeline=None,
                 augment=None, seed: int = 0):
    """``from_tensor_slices -> cache -> shuffle -> batch -> map(augment) -> prefetch``."""
    import tensorflow as tf

    if training:
        _check_augmentable(x, augment)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if pipeline is None or pipeline.cache:
        ds = ds.cache()
    if training and (pipeline is None or pipeline.shuffle_buffer):
        buf = min(len(x), pipeline.shuffle_buffer if pipeline else 10000)
        ds = ds.shuffle(buf, seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if training and augment is not None:
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if pipeline is None or pipeline.prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle / augmentation seed of one epoch: a pure function of (seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7_919) % (2**31 - 1)


class EpochData:
    """The training split as one ``tf.data`` pipeline per epoch, reproducible from (seed, epoch).

    ``dataset(epoch, skip)`` shuffles with :func:`epoch_seed` (no hidden per-iteration
    state), builds a fresh augmenter from the same seed, and drops the first ``skip``
    batches *after* augmentation, so a run resumed at step ``skip`` of ``epoch`` sees
    exactly the batches, and the augmentation draws, of an uninterrupted run. Every
    worker of a multi-worker run builds the same global order and keeps its shard.
    ``steps`` (``train.steps_per_epoch``) repeats the split as needed and takes that many.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, batch_size: int, *, pipeline=None, seed: int = 0,
                 make_augment=None, sample_weight: np.ndarray | None = None, steps: int | None = None):
        import tensorflow as tf

        self.batch_size, self.pipeline, self.seed, self.steps = batch_size, pipeline, seed, steps
        self.make_augment = make_augment
        self.n = len(x)
        _check_augmentable(x, make_augment(seed) if make_augment else None)
        tensors = (x, y) if sample_weight is None else (x, y, sample_weight)
        base = tf.data.Dataset.from_tensor_slices(tensors)
        if pipeline is None or pipeline.cache:
            base = base.cache()
        self.base = base

    @property
    def steps_per_epoch(self) -> int:
        return self.steps or -(-self.n // self.batch_size)

    def samples(self, step: int, k: int) -> int:
        """Examples in the ``k`` batches from ``step`` on (the last batch of a split may be short)."""
        if self.steps:
            return k * self.batch_size
        return max(0, min(self.n, (step + k) * self.batch_size) - step * self.batch_size)

    def dataset(self, epoch: int, skip: int = 0):
        import tensorflow as tf

        ds, s = self.base, epoch_seed(self.seed, epoch)
        if self.steps:
            ds = ds.repeat()
        if self.pipeline is None or self.pipeline.shuffle_buffer:
            buf = min(self.n, self.pipeline.shuffle_buffer if self.pipeline else 10000)
            ds = ds.shuffle(buf, seed=s, reshuffle_each_iteration=False)
        ds = ds.batch(self.batch_size)
        if self.steps:
            ds = ds.take(self.steps)
        augment = self.make_augment(s) if self.make_augment else None
        if augment is not None:
            # sequential: stateful random draws in parallel map calls would be taken in any order
            ds = ds.map(augment if len(ds.element_spec) == 2 else (lambda x, y, w: (*augment(x, y), w)))
        if skip:
            ds = ds.skip(skip)
        if self.pipeline is None or self.pipeline.prefetch:
            ds = ds.prefetch(tf.data.AUTOTUNE)
        return ds

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


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, training: bool, pipeline=None,
                 augment=None, seed: int = 0):
    """``from_tensor_slices -> cache -> shuffle -> batch -> map(augment) -> prefetch``."""
    import tensorflow as tf

    if training and augment is not None and np.asarray(x).dtype.kind in "iub":
        raise DataError(f"data.augment: the inputs are integers (dtype {np.asarray(x).dtype}, e.g. token ids); "
                        "augmentation needs float inputs")
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

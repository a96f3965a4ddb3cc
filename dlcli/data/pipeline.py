"""tf.data input pipelines. Augmentation lives here, so it never reaches a model."""

from __future__ import annotations

import numpy as np

from dlcli.data.stream import data_trace, one_hot_map
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


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle / augmentation seed of one epoch: a pure function of (seed, epoch)."""
    return (seed * 1_000_003 + epoch * 7_919) % (2**31 - 1)


class EpochData:
    """The training split as one ``tf.data`` pipeline per epoch, reproducible from (seed, epoch).

    ``dataset(epoch, skip)`` shuffles with :func:`epoch_seed` (no hidden per-iteration
    state), builds a fresh augmenter from the same seed, and drops the first ``skip``
    batches *after* augmentation, so a run resumed at step ``skip`` of ``epoch`` sees
    exactly the batches, and the augmentation draws, of an uninterrupted run.
    ``steps`` (``train.steps_per_epoch``) repeats the split as needed and takes that many.

    ``split`` is an in-memory :class:`~dlcli.data.stream.ArraySplit` or a streamed
    :class:`~dlcli.data.stream.FileSplit` (image files) or
    :class:`~dlcli.data.records.RecordSplit` (TFRecord shards). A file split without a
    cache shuffles its keys (the whole split: keys are small) and decodes after shuffling,
    in parallel and in order; records shuffle in a bounded buffer before parsing. Under multi-worker (``workers > 1``) a streamed split is read through
    ``distribute_datasets_from_function``: each worker takes its own shard of the keys
    before decoding, so no worker decodes another's examples. An in-memory split is
    distributed as one global pipeline that every worker builds and shards.
    Labels are one-hot encoded in the graph when ``one_hot`` (the number of classes) is set.
    """

    def __init__(self, split, batch_size: int, *, pipeline=None, seed: int = 0, make_augment=None,
                 class_weight: list[float] | None = None, steps: int | None = None,
                 one_hot: int | None = None, workers: int = 1):
        self.split, self.batch_size, self.pipeline, self.seed, self.steps = split, batch_size, pipeline, seed, steps
        self.make_augment, self.one_hot, self.workers = make_augment, one_hot, workers
        self.class_weight = class_weight
        self.n = len(split)
        if make_augment is not None:
            kind = split.x if not split.streamed else np.zeros(0, getattr(split, "dtype", np.float32))
            _check_augmentable(kind, make_augment(seed))
        self.per_worker = workers > 1 and split.streamed

    @property
    def steps_per_epoch(self) -> int:
        return self.steps or -(-self.n // self.batch_size)

    def samples(self, step: int, k: int) -> int:
        """Examples in the ``k`` batches from ``step`` on (the last batch of a split may be short)."""
        if self.steps or self.per_worker:
            return k * self.batch_size
        return max(0, min(self.n, (step + k) * self.batch_size) - step * self.batch_size)

    def first_batch(self):
        """One batch of examples (builds the model's variables)."""
        return self._finish(self.split.dataset(self.batch_size)).take(1).get_single_element()

    def _shuffle(self, ds, seed: int, whole: bool):
        if self.pipeline is not None and not self.pipeline.shuffle_buffer:
            return ds
        buf = self.n if whole else min(self.n, self.pipeline.shuffle_buffer if self.pipeline else 10000)
        return ds.shuffle(max(1, buf), seed=seed, reshuffle_each_iteration=False)

    def _finish(self, ds):
        """Per batch, in the graph: class weights as sample weights, then one-hot labels."""
        import tensorflow as tf

        if self.class_weight:
            table = tf.constant(self.class_weight, tf.float32)  # one weight per class id
            ds = ds.map(lambda x, y: (x, y, tf.gather(table, tf.cast(y, tf.int32))))
        one_hot = one_hot_map(self.one_hot)
        return ds.map(one_hot) if one_hot is not None else ds

    def dataset(self, epoch: int, skip: int = 0, context=None):
        """The batches of ``epoch`` from step ``skip`` on. ``context`` (an ``InputContext``):
        this worker's shard, batched per replica, as many batches as the epoch's steps need."""
        import tensorflow as tf

        s = epoch_seed(self.seed, epoch)
        shards = (context.num_input_pipelines, context.input_pipeline_id) if context else (1, 0)
        cache = self.pipeline is None or self.pipeline.cache
        ds, element, sharded = self.split.examples(shard=shards, seed=s, cache=cache)
        # shards that may be uneven (a split that does not divide into global batches, or
        # whole TFRecord files per worker) repeat a few examples: every worker runs the same steps
        repeat = bool(self.steps) or (context is not None and (self.n % self.batch_size != 0 or sharded))
        if repeat:
            ds = ds.repeat()
        ds = self._shuffle(ds, s, whole=element is not None and getattr(self.split, "shuffle_all", False))
        if element is not None:
            if shards[0] > 1 and not sharded:
                ds = ds.shard(*shards)
            trace = data_trace(shards[1]) if hasattr(self.split, "keys") else None
            if trace is not None:
                ds = ds.map(trace)
            ds = ds.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        per_call, local = self.batch_size, 1
        if context is not None:
            per_call = context.get_per_replica_batch_size(self.batch_size)
            local = context.num_replicas_in_sync // context.num_input_pipelines
        ds = ds.batch(per_call)
        if repeat:
            ds = ds.take(self.steps_per_epoch * local)
        ds = self._finish(ds)
        augment = self.make_augment(s) if self.make_augment else None
        if augment is not None:
            # sequential: stateful random draws in parallel map calls would be taken in any order
            ds = ds.map(augment if len(ds.element_spec) == 2 else (lambda x, y, w: (*augment(x, y), w)))
        if skip:
            ds = ds.skip(skip * local)
        if self.pipeline is None or self.pipeline.prefetch:
            ds = ds.prefetch(tf.data.AUTOTUNE)
        return ds

    def distribute(self, strategy, epoch: int, skip: int = 0):
        """``dataset(epoch, skip)`` distributed over ``strategy``'s replicas (and workers)."""
        if self.per_worker:
            return strategy.distribute_datasets_from_function(lambda ctx: self.dataset(epoch, skip, ctx))
        return strategy.experimental_distribute_dataset(self.dataset(epoch, skip))

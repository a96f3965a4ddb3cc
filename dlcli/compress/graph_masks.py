"""Pruning masks inside the compiled train step: no host round trip.

:class:`GraphPruner` keeps one non-trainable mask variable per pruned kernel. Its
:meth:`~GraphPruner.wrap` turns a train step into one that, in the same compiled
function, recomputes the masks on the schedule (from the optimizer's step counter) and
multiplies every kernel by its mask right after the optimizer update. Under a
``tf.distribute`` strategy both happen in cross-replica context (``merge_call``, as the
optimizer's own update does), so every replica holds the same masks and weights.

The masks are the NumPy reference of :mod:`dlcli.compress.masks` written in TensorFlow:
exactly ``round((1 - s) * n)`` weights kept per kernel (or across kernels, global scope),
or 2 of every 4 along the input axis.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf


def _keep_largest(flat: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """A 0/1 vector with ones at the ``keep`` largest entries of ``flat`` (exactly that many)."""
    n = tf.size(flat)
    keep = tf.clip_by_value(keep, 0, n)
    idx = tf.math.top_k(flat, k=keep, sorted=False).indices
    return tf.scatter_nd(idx[:, None], tf.ones_like(idx, dtype=flat.dtype), [n])


def magnitude_mask(w: tf.Tensor, sparsity: tf.Tensor) -> tf.Tensor:
    flat = tf.reshape(tf.abs(w), [-1])
    keep = tf.cast(tf.round((1.0 - sparsity) * tf.cast(tf.size(flat), tf.float64)), tf.int32)
    return tf.reshape(_keep_largest(flat, keep), tf.shape(w))


def global_masks(weights: list, sparsity: tf.Tensor) -> list:
    flats = [tf.reshape(tf.abs(tf.cast(w, tf.float32)), [-1]) for w in weights]
    flat = tf.concat(flats, 0)
    keep = tf.cast(tf.round((1.0 - sparsity) * tf.cast(tf.size(flat), tf.float64)), tf.int32)
    parts = tf.split(_keep_largest(flat, keep), [int(np.prod(w.shape)) for w in weights])
    return [tf.cast(tf.reshape(p, w.shape), w.dtype) for p, w in zip(parts, weights, strict=True)]


def n_of_m_mask(w: tf.Tensor, input_axis: int, n: int = 2, m: int = 4) -> tf.Tensor:
    """In every group of ``m`` consecutive weights along ``input_axis`` keep the ``n`` largest |w|."""
    rank = len(w.shape)
    perm = [a for a in range(rank) if a != input_axis] + [input_axis]
    moved = tf.transpose(tf.abs(w), perm)
    size = int(w.shape[input_axis])
    pad = (-size) % m
    if pad:
        moved = tf.pad(moved, [[0, 0]] * (rank - 1) + [[0, pad]], constant_values=-1.0)
    outer = moved.shape[:-1]
    groups = tf.reshape(moved, [-1, m])
    top = tf.math.top_k(groups, k=n).indices
    keep = tf.reduce_sum(tf.one_hot(top, m, dtype=w.dtype), axis=1)
    keep = keep * tf.cast(groups >= 0, w.dtype)  # padding never counts
    keep = tf.reshape(keep, [*outer, size + pad])[..., :size]
    return tf.transpose(keep, np.argsort(perm))


def polynomial_sparsity(step: tf.Tensor, begin: int, end: int, initial: float, final: float) -> tf.Tensor:
    """Zhu & Gupta (2017), as :func:`dlcli.compress.masks.polynomial_sparsity` (float64)."""
    frac = tf.clip_by_value((tf.cast(step, tf.float64) - begin) / max(1, end - begin), 0.0, 1.0)
    return final + (initial - final) * (1.0 - frac) ** 3


class GraphPruner:
    """Masks for ``targets`` (see :func:`dlcli.compress.prune.prunable_weights`), updated every
    ``frequency`` optimizer steps between ``begin`` and ``end`` (and at ``end``), and at the
    very first step; applied after every step."""

    def __init__(self, targets, *, sparsity: float, schedule: str, structure: str, scope: str,
                 begin: int, end: int, frequency: int, initial_sparsity: float, iterations):
        self.targets = targets
        self.final, self.schedule, self.structure, self.scope = sparsity, schedule, structure, scope
        self.begin, self.end, self.frequency = begin, end, max(1, frequency)
        self.initial = initial_sparsity
        self.iterations = iterations
        self.masks = [keras.Variable(np.ones(t.variable.shape, dtype=t.variable.dtype), trainable=False,
                                     name=f"prune_mask_{i}", aggregation="only_first_replica")
                      for i, t in enumerate(targets)]

    @property
    def variables(self) -> list:
        return list(self.masks)

    def sparsity_at(self, step) -> tf.Tensor:
        if self.structure == "2:4":
            return tf.constant(0.5, tf.float64)
        if self.schedule == "constant":
            return tf.constant(self.final, tf.float64)
        return polynomial_sparsity(step, self.begin, self.end, self.initial, self.final)

    def _due(self, step) -> tf.Tensor:
        on_beat = tf.logical_or(tf.equal((step - self.begin) % self.frequency, 0), tf.equal(step, self.end))
        return tf.logical_and(tf.logical_and(step >= self.begin, step <= self.end), on_beat)

    def _new_masks(self, step) -> list:
        weights = [tf.convert_to_tensor(t.variable.value) for t in self.targets]
        if self.structure == "2:4":
            return [n_of_m_mask(w, t.input_axis) for w, t in zip(weights, self.targets, strict=True)]
        s = self.sparsity_at(step)
        if self.scope == "global":
            return global_masks(weights, s)
        return [magnitude_mask(w, s) for w in weights]

    def _update_and_apply(self, strategy, first: bool) -> None:
        """Cross-replica: recompute the masks when due, then mask every kernel. ``first``
        (before a step): only at step 0, so a fresh start is masked before its first update."""
        step = tf.cast(tf.convert_to_tensor(self.iterations.value), tf.int64)
        due = tf.equal(step, 0) if first else self._due(step)

        def recompute():
            for var, mask in zip(self.masks, self._new_masks(step), strict=True):
                strategy.extended.update(var.value, _assign, args=(mask,), group=False)
            if first:
                self._apply(strategy)
            return tf.constant(True)

        tf.cond(due, recompute, lambda: tf.constant(False))
        if not first:
            self._apply(strategy)

    def _apply(self, strategy) -> None:
        for t, var in zip(self.targets, self.masks, strict=True):
            strategy.extended.update(t.variable.value, _multiply, args=(var.value,), group=False)

    def wrap(self, train_step):
        """``train_step`` with the masks recomputed on schedule and applied after the update."""

        def step(data):
            ctx = tf.distribute.get_replica_context()
            ctx.merge_call(lambda s: self._update_and_apply(s, first=True))  # a fresh start masks before step 1
            logs = train_step(data)
            ctx.merge_call(lambda s: self._update_and_apply(s, first=False))
            return logs

        return step


def _assign(v, m):
    return v.assign(tf.cast(m, v.dtype))


def _multiply(v, m):
    return v.assign(v * tf.cast(m, v.dtype))


class FixedMasks:
    """Holds a pruned model's zeros at zero while it trains on (quantization-aware training
    after pruning): the masks are the kernels' non-zeros when built, multiplied in after
    every step in cross-replica context, and checkpointed with the run."""

    def __init__(self, kernels: list):
        self.kernels = kernels
        self.masks = [keras.Variable((np.asarray(k.numpy()) != 0).astype(k.dtype), trainable=False,
                                     name=f"keep_mask_{i}", aggregation="only_first_replica")
                      for i, k in enumerate(kernels)]

    @property
    def variables(self) -> list:
        return list(self.masks)

    def wrap(self, train_step):
        def step(data):
            logs = train_step(data)
            tf.distribute.get_replica_context().merge_call(self._apply)
            return logs

        return step

    def _apply(self, strategy) -> None:
        for kernel, mask in zip(self.kernels, self.masks, strict=True):
            strategy.extended.update(kernel.value, _multiply, args=(mask.value,), group=False)

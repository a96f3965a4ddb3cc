"""Magnitude masks and sparsity schedules (NumPy only; no framework imports)."""

from __future__ import annotations

import numpy as np


def polynomial_sparsity(step: int, begin: int, end: int, initial: float, final: float, power: int = 3) -> float:
    """Zhu & Gupta (2017): sparsity rises from ``initial`` to ``final`` between ``begin`` and ``end``."""
    if step <= begin:
        return initial
    if step >= end:
        return final
    frac = (step - begin) / max(1, end - begin)
    return final + (initial - final) * (1.0 - frac) ** power


def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Keep the ``round((1 - sparsity) * n)`` largest |w|; exactly that many ones."""
    n = w.size
    keep = round((1.0 - sparsity) * n)
    mask = np.zeros(n, dtype=w.dtype)
    if keep > 0:
        idx = np.argpartition(np.abs(w).reshape(-1), n - keep)[n - keep:]
        mask[idx] = 1
    return mask.reshape(w.shape)


def n_of_m_mask(w: np.ndarray, input_axis: int, n: int = 2, m: int = 4) -> np.ndarray:
    """N:M structured sparsity: in every group of ``m`` consecutive weights along the
    input axis keep the ``n`` largest |w| (a trailing partial group keeps at most ``n``)."""
    moved = np.moveaxis(w, input_axis, -1)
    size = moved.shape[-1]
    pad = (-size) % m
    a = np.abs(moved)
    if pad:
        a = np.concatenate([a, np.full((*a.shape[:-1], pad), -1.0, a.dtype)], axis=-1)
    groups = a.reshape(*a.shape[:-1], -1, m)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros_like(groups, dtype=bool)
    np.put_along_axis(keep, order[..., :n], True, axis=-1)
    keep &= groups >= 0  # padding never counts
    keep = keep.reshape(*a.shape[:-1], -1)[..., :size]
    return np.moveaxis(keep.astype(w.dtype), -1, input_axis)


def check_n_of_m(w: np.ndarray, input_axis: int, n: int = 2, m: int = 4) -> bool:
    moved = np.moveaxis(w, input_axis, -1)
    size = moved.shape[-1]
    for start in range(0, size, m):
        if np.max(np.count_nonzero(moved[..., start:start + m], axis=-1), initial=0) > n:
            return False
    return True


def global_magnitude_masks(weights: list[np.ndarray], sparsity: float) -> list[np.ndarray]:
    """One magnitude threshold across all ``weights``: exactly ``round(sparsity * N)`` zeros
    overall, fewer in small or sensitive layers, more in large redundant ones."""
    flat = np.concatenate([np.abs(w).reshape(-1) for w in weights])
    n = flat.size
    keep = round((1.0 - sparsity) * n)
    mask = np.zeros(n, dtype=np.float32)
    if keep > 0:
        mask[np.argpartition(flat, n - keep)[n - keep:]] = 1
    out, start = [], 0
    for w in weights:
        out.append(mask[start:start + w.size].reshape(w.shape).astype(w.dtype))
        start += w.size
    return out

"""Adaptive-LASSO outlier selection (AdpQ, arXiv 2405.13358), calibration-free.

The adaptive-LASSO problem  min_ŵ ½‖w − ŵ‖² + λ Σ |ŵ_i| / |w_i|^γ  separates per weight and
has the closed form

    ŵ = sign(w) · max(|w| − λ / |w|^γ, 0).

ŵ is non-zero exactly when |w|^(1+γ) > λ, i.e. when |w| > t with t = λ^(1/(1+γ)). Solving λ
for a target outlier fraction α therefore means choosing t as the magnitude below which a
fraction 1 − α of the weights lie, within the chosen scope (matrix, row or group); γ only
sets how far a surviving weight is shrunk.

All functions work on a weight laid out as rows = output channels, ``w[N, K]``, groups along K.
"""

from __future__ import annotations

import numpy as np


def group_bounds(k: int, group_size: int) -> list[tuple[int, int]]:
    """[start, stop) of each group along K; the last one may be shorter."""
    return [(s, min(s + group_size, k)) for s in range(0, k, group_size)]


def _top_mask(absw: np.ndarray, count: int) -> np.ndarray:
    """Mask of the `count` largest entries of each row of a 2-D array (ties broken by index)."""
    rows, cols = absw.shape
    mask = np.zeros((rows, cols), dtype=bool)
    if count <= 0:
        return mask
    count = min(count, cols)
    idx = np.argpartition(-absw, count - 1, axis=1)[:, :count]
    np.put_along_axis(mask, idx, True, axis=1)
    return mask


def select_outliers(w: np.ndarray, alpha: float, scope: str, group_size: int) -> np.ndarray:
    """Boolean mask [N, K] of the outliers: the weights that survive the adaptive soft threshold.

    With λ solved so that round(α · n) of the n weights of each scope survive.
    """
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight, got shape {w.shape}")
    absw = np.abs(w.astype(np.float32, copy=False))
    n, k = absw.shape
    if alpha <= 0.0:
        return np.zeros((n, k), dtype=bool)
    if scope == "matrix":
        count = int(round(alpha * absw.size))
        return _top_mask(absw.reshape(1, -1), count).reshape(n, k)
    if scope == "row":
        return _top_mask(absw, int(round(alpha * k)))
    if scope == "group":
        mask = np.zeros((n, k), dtype=bool)
        for start, stop in group_bounds(k, group_size):
            mask[:, start:stop] = _top_mask(absw[:, start:stop], int(round(alpha * (stop - start))))
        return mask
    raise ValueError(f"unknown lasso scope {scope!r}")


def matrix_threshold(w: np.ndarray, alpha: float) -> tuple[float, float]:
    """(cut, largest inlier) for the matrix scope: |w| >= cut marks the round(α·size) largest.

    Solved once over the whole matrix so that it can then be applied block by block (ties at
    the cut are all kept apart, so the count can exceed round(α·size) by the tie count).
    """
    absw = np.abs(w, dtype=np.float32).ravel()
    count = int(round(alpha * absw.size))
    if count <= 0:
        return float("inf"), float(absw.max(initial=0.0))
    count = min(count, absw.size)
    pos = absw.size - count
    absw.partition(max(pos - 1, 0))
    below = float(absw[pos - 1]) if pos > 0 else 0.0
    cut = float(absw[pos:].min())
    return cut, below


def threshold_per_row(w: np.ndarray, mask: np.ndarray, scope: str, group_size: int) -> np.ndarray:
    """The threshold t (largest inlier magnitude) of the scope each weight belongs to, [N, K].

    λ = t^(1+γ); returned as t so that callers can use any γ.
    """
    absw = np.abs(w.astype(np.float32, copy=False))
    inl = np.where(mask, 0.0, absw)
    n, k = absw.shape
    if scope == "matrix":
        return np.full((n, k), inl.max(initial=0.0), dtype=np.float32)
    if scope == "row":
        return np.broadcast_to(inl.max(axis=1, keepdims=True), (n, k)).astype(np.float32)
    t = np.empty((n, k), dtype=np.float32)
    for start, stop in group_bounds(k, group_size):
        t[:, start:stop] = inl[:, start:stop].max(axis=1, keepdims=True)
    return t


def soft_threshold(w: np.ndarray, t: np.ndarray, gamma: float) -> np.ndarray:
    """Closed-form adaptive LASSO ŵ = sign(w)·max(|w| − λ/|w|^γ, 0) with λ = t^(1+γ)."""
    w = w.astype(np.float32, copy=False)
    absw = np.abs(w)
    lam = np.power(t, 1.0 + gamma, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        shrink = np.where(absw > 0, lam / np.power(absw, gamma, dtype=np.float32), np.inf)
    return (np.sign(w) * np.maximum(absw - shrink, 0.0)).astype(np.float32)

"""Adaptive rounding: choose codes on a fixed grid to minimize a quadratic proxy of output error.

Nearest rounding minimizes ‖W − Ŵ‖_F, which treats every input (and every output) of a layer as
independent. Where the weights around a layer say how its errors mix, the error of row r,
e_r = w_r − ŵ_r, costs e_r H e_rᵀ for a positive semi-definite H over the columns. GPTQ's
column-by-column update (error feedback through the Cholesky factor of H⁻¹) rounds each column
and pushes its error onto the columns not yet rounded, in the direction H says is cheapest.

Here H comes from weights only (`adpq_onnx.quant.proxies`), never from data, and the grid is
the AdpQ grid already fitted (scales and integer zero points per group, outlier positions fixed),
so the codes stay in the packed format unchanged: only which level each weight takes moves.
Outlier positions are "rounded" to their own precision (float16, or int8 on their row's fixed
scale) and take part in the feedback like any other weight.
"""

from __future__ import annotations

import numpy as np

# Columns rounded together before their accumulated error is pushed onto the rest (GPTQ's lazy
# batch update): the result is the same as column by column, with fewer large matrix products.
BLOCK = 128


def _inverse_cholesky(h: np.ndarray, damp: float) -> np.ndarray:
    """Upper Cholesky factor of (H + damp·mean(diag H)·I)⁻¹, in float64.

    Columns with a zero diagonal (inputs the proxy says never move) get a unit diagonal, so that
    they round to nearest without feeding any error forward.
    """
    h = np.array(h, dtype=np.float64, copy=True)
    diag = np.diag(h).copy()
    dead = diag <= 0
    h[dead, :] = 0.0
    h[:, dead] = 0.0
    h[dead, dead] = 1.0
    mean = float(np.mean(np.diag(h)))
    h[np.diag_indices_from(h)] += damp * mean
    # H⁻¹ = L⁻ᵀL⁻¹ with H = LLᵀ; the upper factor U of H⁻¹ (H⁻¹ = UᵀU) is what GPTQ reads.
    lower = np.linalg.cholesky(h)
    inv = np.linalg.inv(lower)
    h_inv = inv.T @ inv
    return np.linalg.cholesky(h_inv).T


def gptq_round(
    w: np.ndarray,
    h: np.ndarray,
    scale: np.ndarray,
    zero: np.ndarray,
    bits: int,
    outliers: np.ndarray | None = None,
    outlier_step: np.ndarray | None = None,
    damp: float = 0.01,
) -> tuple[np.ndarray, np.ndarray]:
    """Round w[R, C] on its grid with error feedback through H[C, C].

    Args:
        w: The weights, float32 [R, C]; rows are independent, columns share H.
        h: The proxy, positive semi-definite [C, C].
        scale, zero: The grid of every weight, float32 [R, C] (group values expanded).
        bits: Code width; codes are clamped to [0, 2^bits − 1].
        outliers: bool [R, C], weights stored apart instead of on the grid.
        outlier_step: float32 [R, C], the int8 step of each outlier's row; None stores outliers
            as float16.
        damp: Added to H's diagonal, relative to its mean (H from weights is often singular).

    Returns:
        (codes uint8 [R, C], outlier values float32 [R, C] as stored, 0 elsewhere). In the codes,
        an outlier's slot holds its grid's zero point (it adds exactly 0).
    """
    rows, cols = w.shape
    if h.shape != (cols, cols):
        raise ValueError(f"proxy H has shape {h.shape}, expected ({cols}, {cols})")
    qmax = float((1 << bits) - 1)
    u = _inverse_cholesky(h, damp)
    work = np.array(w, dtype=np.float64, copy=True)
    codes = np.zeros((rows, cols), dtype=np.uint8)
    stored = np.zeros((rows, cols), dtype=np.float32)
    for c0 in range(0, cols, BLOCK):
        c1 = min(c0 + BLOCK, cols)
        block = work[:, c0:c1]  # a view: updates land in `work`
        err = np.zeros((rows, c1 - c0), dtype=np.float64)
        for j in range(c1 - c0):
            c = c0 + j
            x = block[:, j]
            s = scale[:, c].astype(np.float64)
            z = zero[:, c].astype(np.float64)
            q = np.clip(np.round(x / s) + z, 0.0, qmax)
            xq = (q - z) * s
            if outliers is not None:
                o = outliers[:, c]
                if o.any():
                    val = _store_outliers(
                        x[o], None if outlier_step is None else outlier_step[o, c]
                    )
                    xq[o] = val
                    q[o] = z[o]
                    stored[o, c] = val
            codes[:, c] = q.astype(np.uint8)
            e = (x - xq) / u[c, c]
            block[:, j:] -= np.outer(e, u[c, c:c1])
            err[:, j] = e
        work[:, c1:] -= err @ u[c0:c1, c1:]
    return codes, stored


def _store_outliers(x: np.ndarray, step: np.ndarray | None) -> np.ndarray:
    """Outlier values at their stored precision: float16, or int8 codes on a fixed step."""
    if step is None:
        return x.astype(np.float16).astype(np.float32)
    return (np.clip(np.round(x / step), -127, 127) * step).astype(np.float32)

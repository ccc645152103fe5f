"""Adaptive-LASSO outlier selection against brute force, and its closed form."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adpq_onnx.quant import lasso

SCOPES = ("matrix", "row", "group")
# Points of the grid on which the brute-force minimizer searches [0, |w|].
GRID = 4001


def _distinct_weights(n: int, k: int, seed: int) -> np.ndarray:
    """n×k weights with distinct, well-separated magnitudes j/(n·k) and random signs."""
    rng = np.random.default_rng(seed)
    mags = (rng.permutation(n * k) + 1) / (n * k)
    signs = rng.choice([-1.0, 1.0], size=n * k)
    return (mags * signs).reshape(n, k).astype(np.float32)


def _brute_minimizer(w: np.ndarray, lam: np.ndarray, gamma: float) -> np.ndarray:
    """argmin_x ½(w − x)² + λ|x|/|w|^γ found on a grid (the optimum has w's sign, |x| ≤ |w|)."""
    absw = np.abs(w)[..., None]
    x = np.linspace(0.0, 1.0, GRID) * absw
    cost = 0.5 * (absw - x) ** 2 + lam[..., None] * x / absw**gamma
    return np.sign(w) * np.take_along_axis(x, cost.argmin(axis=-1)[..., None], -1)[..., 0]


def _scopes(shape: tuple[int, int], scope: str, group: int) -> list[tuple[slice, slice]]:
    n, k = shape
    if scope == "matrix":
        return [(slice(None), slice(None))]
    if scope == "row":
        return [(slice(r, r + 1), slice(None)) for r in range(n)]
    return [
        (slice(r, r + 1), slice(s, e)) for r in range(n) for s, e in lasso.group_bounds(k, group)
    ]


def _brute_mask(w: np.ndarray, alpha: float, scope: str, group: int, gamma: float) -> np.ndarray:
    """Per scope: pick λ between the count-th and next |w|^(1+γ), minimize, keep the non-zeros."""
    mask = np.zeros(w.shape, dtype=bool)
    for sl in _scopes(w.shape, scope, group):
        part = w[sl]
        count = int(round(alpha * part.size))
        powers = np.sort(np.abs(part).ravel() ** (1 + gamma))[::-1]
        hi = powers[count - 1] if count > 0 else np.inf
        lo = powers[count] if count < part.size else 0.0
        lam = np.full(part.shape, (hi + lo) / 2 if np.isfinite(hi) else 2 * lo)
        mask[sl] = np.abs(_brute_minimizer(part, lam, gamma)) > 0
    return mask


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("shape", [(4, 8), (3, 40), (1, 64)])
def test_selection_matches_brute_force(scope: str, gamma: float, shape: tuple[int, int]) -> None:
    w = _distinct_weights(*shape, seed=sum(shape))
    alpha, group = 0.1, 32
    got = lasso.select_outliers(w, alpha, scope, group)
    np.testing.assert_array_equal(got, _brute_mask(w, alpha, scope, group, gamma))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 6),
    k=st.integers(1, 300),
    alpha=st.floats(0.0, 0.49),
    scope=st.sampled_from(SCOPES),
    group=st.sampled_from([32, 64, 128]),
)
def test_selects_exactly_round_alpha_per_scope(
    n: int, k: int, alpha: float, scope: str, group: int
) -> None:
    w = np.random.default_rng(n * 1000 + k).standard_normal((n, k)).astype(np.float32)
    mask = lasso.select_outliers(w, alpha, scope, group)
    for sl in _scopes((n, k), scope, group):
        assert mask[sl].sum() == int(round(alpha * mask[sl].size))


def test_selected_are_the_largest_in_scope() -> None:
    w = _distinct_weights(5, 96, seed=3)
    mask = lasso.select_outliers(w, 0.05, "row", 32)
    for row, m in zip(np.abs(w), mask, strict=True):
        assert row[m].min() > row[~m].max()


def test_alpha_zero_selects_nothing() -> None:
    w = _distinct_weights(3, 32, seed=1)
    for scope in SCOPES:
        assert not lasso.select_outliers(w, 0.0, scope, 32).any()


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 3.0])
def test_soft_threshold_is_the_minimizer(gamma: float) -> None:
    w = _distinct_weights(4, 16, seed=7)
    t = np.full(w.shape, 0.6, dtype=np.float32)
    closed = lasso.soft_threshold(w, t, gamma)
    brute = _brute_minimizer(w, t ** (1 + gamma), gamma)
    # The grid step bounds the brute-force error.
    np.testing.assert_allclose(closed, brute, atol=1.0 / (GRID - 1) + 1e-6)


def test_soft_threshold_closed_form_values() -> None:
    w = np.array([[2.0, -2.0, 0.5, 0.0, -1.0]], dtype=np.float32)
    t = np.ones_like(w)
    # γ = 1, λ = 1: ŵ = sign(w)·max(|w| − 1/|w|, 0)
    expect = np.array([[1.5, -1.5, 0.0, 0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(lasso.soft_threshold(w, t, 1.0), expect)


def test_threshold_is_largest_inlier_magnitude() -> None:
    w = _distinct_weights(2, 64, seed=5)
    mask = lasso.select_outliers(w, 0.1, "row", 32)
    t = lasso.threshold_per_row(w, mask, "row", 32)
    for r in range(2):
        assert t[r, 0] == np.abs(w[r][~mask[r]]).max()


def test_rejects_unknown_scope_and_bad_rank() -> None:
    with pytest.raises(ValueError, match="scope"):
        lasso.select_outliers(np.ones((2, 2), np.float32), 0.1, "column", 32)
    with pytest.raises(ValueError, match="2-D"):
        lasso.select_outliers(np.ones(4, np.float32), 0.1, "row", 32)

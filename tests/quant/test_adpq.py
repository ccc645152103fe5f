"""Properties of `quantize_weight`: exact zeros, outlier budget, error per bit width."""

from __future__ import annotations

import numpy as np
import pytest

from adpq_onnx.quant import adpq, affine

# Relative Frobenius error budgets of a Gaussian 64×512 weight at G=128, α=0.5 %.
MAX_REL_ERROR = {2: 0.50, 3: 0.22, 4: 0.10, 8: 0.0065}


def _gaussian(n: int = 64, k: int = 512, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)


def _rel_error(qw: adpq.QuantizedWeight, w: np.ndarray) -> float:
    return float(np.linalg.norm(qw.dequantize() - w) / np.linalg.norm(w))


def _quantize(w: np.ndarray, bits: int, **kw: object) -> adpq.QuantizedWeight:
    opts: dict = {"group_size": 128, "outlier_ratio": 0.005, **kw}
    return adpq.quantize_weight(w, bits=bits, **opts)


def test_error_falls_as_bits_rise() -> None:
    w = _gaussian()
    errors = {b: _rel_error(_quantize(w, b), w) for b in (2, 3, 4, 8)}
    assert errors[2] > errors[3] > errors[4] > errors[8]
    for bits, err in errors.items():
        assert err < MAX_REL_ERROR[bits], f"{bits}-bit error {err:.4f}"


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_integer_zero_point_makes_zero_exact(bits: int) -> None:
    w = _gaussian(8, 256, seed=1)
    w[:, ::7] = 0.0
    scales, zeros = affine.choose_qparams(w, None, bits, 64)
    codes = affine.quantize(w, scales, zeros, bits, 64)
    back = affine.dequantize(codes, scales, zeros, 64)
    assert np.all(back[:, ::7] == 0.0)
    qw = _quantize(w, bits)
    assert np.all(qw.dequantize()[:, ::7] == 0.0)


def test_outliers_are_stored_apart_and_exact_in_exact_mode() -> None:
    w = _gaussian(16, 256, seed=2)
    w[3, 10] = 40.0  # far outside every group's range
    qw = _quantize(w, 3, outlier_ratio=0.01, lasso_scope="row")
    assert qw.nnz == 16 * round(0.01 * 256)
    dense = qw.dense_outliers()
    assert dense[3, 10] == np.float16(40.0)
    # the outlier no longer stretches its group: its row's error stays at the 3-bit budget
    assert _rel_error(qw, w) < MAX_REL_ERROR[3]
    np.testing.assert_allclose(qw.dequantize()[3, 10], 40.0, rtol=1e-3)


@pytest.mark.parametrize("scope", ["matrix", "row", "group"])
def test_outlier_count_is_exact_fraction(scope: str) -> None:
    w = _gaussian(8, 640, seed=3)
    qw = _quantize(w, 4, outlier_ratio=0.02, lasso_scope=scope)
    expect = {"matrix": round(0.02 * w.size), "row": 8 * round(0.02 * 640)}
    expect["group"] = 8 * 5 * round(0.02 * 128)
    assert qw.nnz == expect[scope]


def test_shrink_mode_stores_shrunk_values() -> None:
    w = _gaussian(4, 256, seed=4)
    exact = _quantize(w, 4, outlier_mode="exact")
    shrink = _quantize(w, 4, outlier_mode="shrink", gamma=1.0)
    assert np.all(np.abs(shrink.outlier_values()) < np.abs(exact.outlier_values()))


def test_int8_outliers_carry_a_scale() -> None:
    w = _gaussian(4, 256, seed=5)
    qw = _quantize(w, 4, outlier_dtype="int8")
    assert qw.outlier_val.dtype == np.int8 and qw.outlier_scale is not None
    assert qw.outlier_scale.shape == (4,)
    assert _rel_error(qw, w) < MAX_REL_ERROR[4]


def test_k_not_multiple_of_group() -> None:
    w = _gaussian(8, 576 - 1, seed=6)
    qw = _quantize(w, 4)
    assert qw.scales.shape == (8, 5)
    assert _rel_error(qw, w) < MAX_REL_ERROR[4]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_rejected(bad: float) -> None:
    w = _gaussian(4, 64)
    w[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        _quantize(w, 4)


def test_rejects_non_2d() -> None:
    with pytest.raises(ValueError, match="2-D"):
        _quantize(np.ones(8, np.float32), 4)


def test_storage_bits_counts_every_tensor() -> None:
    w = _gaussian(8, 100, seed=7)
    qw = _quantize(w, 3, group_size=32)
    bits = adpq.storage_bits(qw)
    assert bits["codes"] == 8 * 128 * 3  # K padded to 128
    assert bits["scales"] == 8 * 4 * 16 and bits["zero_points"] == 8 * 4 * 8
    assert bits["outlier_ptr"] == 9 * 32
    assert adpq.bits_per_weight(qw) == sum(bits.values()) / w.size

"""Adaptive rounding (`rounding.gptq_round`, through `adpq.quantize_weight(proxy=...)`)."""

from __future__ import annotations

import numpy as np
import pytest

from adpq_onnx.quant import adpq

OPTS = {"bits": 3, "group_size": 64, "outlier_ratio": 0.02}


def _setup(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((48, 200)).astype(np.float32)  # K = 200: a ragged last group
    low = rng.standard_normal((200, 30))
    h_in = low @ low.T + 0.05 * np.eye(200)
    low = rng.standard_normal((48, 10))
    h_out = low @ low.T + 0.05 * np.eye(48)
    return w, h_in, h_out


def _input_loss(qw: adpq.QuantizedWeight, w: np.ndarray, h: np.ndarray) -> float:
    e = qw.dequantize() - w
    return float(np.einsum("rk,kl,rl->", e, h, e))


def _output_loss(qw: adpq.QuantizedWeight, w: np.ndarray, h: np.ndarray) -> float:
    e = qw.dequantize() - w
    return float(np.einsum("nk,nm,mk->", e, h, e))


@pytest.mark.parametrize("dtype", ["int8", "float16"])
def test_identity_proxy_is_nearest_rounding(dtype: str) -> None:
    w, _, _ = _setup()
    plain = adpq.quantize_weight(w, outlier_dtype=dtype, **OPTS)
    for side, size in (("input", 200), ("output", 48)):
        qw = adpq.quantize_weight(
            w, outlier_dtype=dtype, proxy=np.eye(size), proxy_side=side, **OPTS
        )
        np.testing.assert_array_equal(qw.codes, plain.codes)
        np.testing.assert_array_equal(qw.outlier_val, plain.outlier_val)


@pytest.mark.parametrize("dtype", ["int8", "float16"])
def test_proxy_loss_falls_and_format_is_kept(dtype: str) -> None:
    w, h_in, h_out = _setup(1)
    plain = adpq.quantize_weight(w, outlier_dtype=dtype, **OPTS)
    q_in = adpq.quantize_weight(w, outlier_dtype=dtype, proxy=h_in, **OPTS)
    q_out = adpq.quantize_weight(w, outlier_dtype=dtype, proxy=h_out, proxy_side="output", **OPTS)
    assert _input_loss(q_in, w, h_in) < 0.5 * _input_loss(plain, w, h_in)
    assert _output_loss(q_out, w, h_out) < 0.7 * _output_loss(plain, w, h_out)
    for qw in (q_in, q_out):
        # Same grid, same outlier positions; outlier slots still hold their zero point.
        np.testing.assert_array_equal(qw.scales, plain.scales)
        np.testing.assert_array_equal(qw.zeros, plain.zeros)
        np.testing.assert_array_equal(qw.outlier_ptr, plain.outlier_ptr)
        np.testing.assert_array_equal(qw.outlier_idx, plain.outlier_idx)
        assert qw.codes.max() < 8
        rows = np.repeat(np.arange(48), np.diff(qw.outlier_ptr))
        cols = qw.outlier_idx.astype(np.int64)
        np.testing.assert_array_equal(qw.codes[rows, cols], qw.zeros[rows, cols // 64])


def test_singular_proxy_and_dead_inputs() -> None:
    w, _, _ = _setup(2)
    h = np.zeros((200, 200))
    h[:100, :100] = 1.0  # rank one over the first half, nothing over the second
    qw = adpq.quantize_weight(w, proxy=h, **OPTS)
    assert np.isfinite(qw.dequantize()).all()


def test_bad_proxy_shape_is_refused() -> None:
    w, _, _ = _setup()
    with pytest.raises(ValueError, match="proxy H has shape"):
        adpq.quantize_weight(w, proxy=np.eye(7), **OPTS)
    with pytest.raises(ValueError, match="unknown proxy side"):
        adpq.quantize_weight(w, proxy=np.eye(200), proxy_side="left", **OPTS)

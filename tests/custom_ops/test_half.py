"""float16 <-> float32 conversions of the kernel (include/adpq/half.h) against numpy, exhaustively.

A hand-built 8-bit weight with B = s · I (code = zero point + 1 on the diagonal, scale s) makes
Y[m, n] = A[m, n] · s exactly (every other product is ±0), so Y equals numpy's
(A.astype(float32) * s).astype(float16): every finite half goes through
HalfToFloat, and FloatToHalf must round to nearest-even, make subnormals and overflow to inf.
"""

from __future__ import annotations

import numpy as np
import pytest

from adpq_onnx.formats import PackedWeight, bitpack

pytestmark = pytest.mark.requires_custom_ops

K = N = 32
ZERO = 128


def scaled_identity(scale: float) -> PackedWeight:
    codes = np.full((N, K), ZERO, dtype=np.uint8) + np.eye(N, K, dtype=np.uint8)
    return PackedWeight(
        k=K,
        n=N,
        bits=8,
        group_size=32,
        codes=bitpack.pack_codes(codes, 8),
        scales=np.full((N, 1), scale, dtype=np.float16),
        zero_points=np.full((N, 1), ZERO, dtype=np.uint8),
        outlier_ptr=np.zeros(N + 1, dtype=np.int32),
        outlier_idx=np.zeros(0, dtype=np.uint16),
        outlier_val=np.zeros(0, dtype=np.float16),
    )


def all_finite_halves() -> np.ndarray:
    h = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    return h[np.isfinite(h)].reshape(-1, K)


# 1: exact round trip; 0.2998 and 1.5: rounding ties, 1.5 also overflow to inf; 2^-10: subnormals.
@pytest.mark.parametrize("scale", [1.0, 0.2998, 1.5, 2.0**-10])
def test_float16_round_trip_and_rounding(adpq, scale):
    pw = scaled_identity(scale)
    model, _ = adpq.one_node_model(np.float16, adpq.node_inputs(pw, None), adpq.attrs_of(pw))
    a = all_finite_halves()
    y = adpq.session(model).run(None, {"A": a})[0]
    s = np.float32(np.float16(scale))
    with np.errstate(over="ignore"):  # overflow to inf is what is being tested
        want = (a.astype(np.float32) * s).astype(np.float16)
    # Value equality is bit equality here except for the sign of zero: the kernel's sums start
    # at +0, so -0 · s comes out as +0.
    np.testing.assert_array_equal(y, want)


def test_float32_identity_is_exact(adpq):
    pw = scaled_identity(1.0)
    model, _ = adpq.one_node_model(np.float32, adpq.node_inputs(pw, None), adpq.attrs_of(pw))
    a = all_finite_halves().astype(np.float32) * np.float32(1.2345)
    y = adpq.session(model).run(None, {"A": a})[0]
    np.testing.assert_array_equal(y, a)

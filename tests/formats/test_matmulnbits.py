"""The MatMulNBits packer is the spec: exact round-trips, and stock ORT computes its dequant."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from adpq_onnx.formats import matmulnbits
from adpq_onnx.quant import affine

# Stock ORT accumulates in float32; relative to |Y| this is the error it may add.
MAX_REL_DIFF_FP32 = 1e-4
MAX_REL_DIFF_FP16 = 5e-3

SHAPES = [(576, 40, 128), (256, 16, 32), (96, 24, 32), (512, 8, 256)]


def _random_grid(rng, n, k, bits, block):
    nb = -(-k // block)
    qmax = (1 << bits) - 1
    codes = rng.integers(0, qmax + 1, size=(n, k), dtype=np.uint8)
    zeros = rng.integers(0, qmax + 1, size=(n, nb), dtype=np.uint8)
    scales = (rng.random((n, nb)) * 0.1 + 0.01).astype(np.float16)
    return codes, scales, zeros


@pytest.mark.parametrize("bits", matmulnbits.BITS)
@pytest.mark.parametrize("k,n,block", SHAPES)
def test_round_trip_is_exact(rng, bits, k, n, block) -> None:
    codes, scales, zeros = _random_grid(rng, n, k, bits, block)
    w = matmulnbits.pack(codes, scales, zeros, bits, block)
    nb = -(-k // block)
    assert w.b.shape == (n, nb, block * bits // 8)
    assert w.zero_points.shape == (n, -(-nb * bits // 8))
    assert w.scales.shape == (n * nb,)
    c2, s2, z2 = matmulnbits.unpack(w)
    np.testing.assert_array_equal(c2, codes)
    np.testing.assert_array_equal(z2, zeros)
    np.testing.assert_array_equal(s2, scales.astype(np.float32))


def test_nibble_order() -> None:
    """4 bits: the low nibble holds the even element (ORT's layout)."""
    codes = np.zeros((1, 32), np.uint8)
    codes[0, 0], codes[0, 1] = 3, 12
    w = matmulnbits.pack(codes, np.ones((1, 1), np.float16), np.zeros((1, 1), np.uint8), 4, 32)
    assert w.b[0, 0, 0] == 3 | 12 << 4


@pytest.mark.parametrize("bits,block", [(3, 32), (5, 32), (4, 48), (4, 8)])
def test_rejects_what_ort_cannot_read(bits, block) -> None:
    with pytest.raises(ValueError, match="MatMulNBits"):
        matmulnbits.check_params(bits, block)


def test_fold_clamps_into_the_grid(rng) -> None:
    w = rng.standard_normal((4, 64)).astype(np.float32)
    w[0, 0] = 100.0  # far outside the grid
    scales, zeros = affine.choose_qparams(w, np.abs(w) < 5, 4, 32)
    folded = matmulnbits.dequantize_b(matmulnbits.fold(w, scales, zeros, 4, 32)).T
    grid_max = (15 - zeros[0, 0].astype(np.float32)) * scales[0, 0].astype(np.float32)
    assert folded[0, 0] == pytest.approx(grid_max)


def _ort_matmulnbits(a: np.ndarray, w: matmulnbits.NBitsWeight) -> np.ndarray:
    import onnxruntime as ort

    t = TensorProto.FLOAT if a.dtype == np.float32 else TensorProto.FLOAT16
    node = helper.make_node(
        "MatMulNBits",
        ["A", "B", "scales", "zero_points"],
        ["Y"],
        domain="com.microsoft",
        K=w.k,
        N=w.n,
        bits=w.bits,
        block_size=w.block_size,
    )
    inits = [numpy_helper.from_array(arr, name) for name, arr in w.tensors().items()]
    graph = helper.make_graph(
        [node],
        "nbits",
        [helper.make_tensor_value_info("A", t, [None, w.k])],
        [helper.make_tensor_value_info("Y", t, [None, w.n])],
        inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
        ir_version=10,
    )
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"A": a})[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("bits", matmulnbits.BITS)
@pytest.mark.parametrize("k,n,block", SHAPES)
def test_stock_ort_matches_numpy_dequant(rng, dtype, bits, k, n, block) -> None:
    codes, scales, zeros = _random_grid(rng, n, k, bits, block)
    w = matmulnbits.pack(codes, scales, zeros, bits, block, scale_dtype=dtype)
    a = rng.standard_normal((3, k)).astype(dtype)
    expected = a.astype(np.float32) @ matmulnbits.dequantize_b(w)
    got = _ort_matmulnbits(a, w).astype(np.float32)
    tol = MAX_REL_DIFF_FP32 if dtype == np.float32 else MAX_REL_DIFF_FP16
    assert np.abs(got - expected).max() <= tol * np.abs(expected).max()

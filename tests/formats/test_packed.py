"""The packed weight: lossless pack/unpack, byte sizes, and the bits-per-weight formula."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from adpq_onnx import formats
from adpq_onnx.formats import bitpack, packed
from adpq_onnx.quant import adpq

BITS = [2, 3, 4, 8]
GROUPS = [32, 64, 128, 256]
KS = [32, 576, 100, 1]
N = 3


def _quantized(
    k: int, bits: int, group: int, outlier_dtype: str = "float16"
) -> adpq.QuantizedWeight:
    w = np.random.default_rng(k + bits + group).standard_normal((N, k)).astype(np.float32)
    return adpq.quantize_weight(
        w, bits=bits, group_size=group, outlier_ratio=0.03, outlier_dtype=outlier_dtype
    )


def _assert_same(a: adpq.QuantizedWeight, b: adpq.QuantizedWeight) -> None:
    for field in dataclasses.fields(a):
        x, y = getattr(a, field.name), getattr(b, field.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, field.name
            np.testing.assert_array_equal(x, y, err_msg=field.name)
        else:
            assert x == y, field.name


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("bits", BITS)
def test_round_trip_is_exact(bits: int, group: int, k: int) -> None:
    qw = _quantized(k, bits, group)
    back = formats.unpack(formats.pack(qw))
    _assert_same(qw, back)
    np.testing.assert_array_equal(back.dequantize(), qw.dequantize())


@pytest.mark.parametrize("bits", BITS)
def test_round_trip_int8_outliers(bits: int) -> None:
    qw = _quantized(576, bits, 128, outlier_dtype="int8")
    pw = formats.pack(qw)
    assert pw.outlier_scale is not None and list(pw.tensors())[-1] == "outlier_scale"
    _assert_same(qw, formats.unpack(pw))


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("group", GROUPS)
@pytest.mark.parametrize("bits", BITS)
def test_byte_sizes(bits: int, group: int, k: int) -> None:
    pw = formats.pack(_quantized(k, bits, group))
    ng = -(-k // group)
    nnz = int(pw.outlier_ptr[-1])
    sizes = {name: t.nbytes for name, t in pw.tensors().items()}
    assert sizes == {
        "codes": N * -(-k // 32) * 4 * bits,
        "scales": N * ng * 2,
        "zero_points": N * ng,
        "outlier_ptr": 4 * (N + 1),
        "outlier_idx": 2 * nnz,
        "outlier_val": 2 * nnz,
    }
    assert pw.nbytes == sum(sizes.values())


@pytest.mark.parametrize("k", KS)
@pytest.mark.parametrize("bits", BITS)
def test_bits_per_weight_formula(bits: int, k: int) -> None:
    group = 64
    qw = _quantized(k, bits, group)
    pw = formats.pack(qw)
    k_pad = -(-k // 32) * 32
    alpha = qw.nnz / (k * N)
    # bits·K_pad/K + 24·n_groups/K + 32·(N+1)/(K·N) + α·(16 + 16), the module docstring's sum
    formula = bits * k_pad / k + 24 * -(-k // group) / k + 32 * (N + 1) / (k * N) + alpha * 32
    assert pw.bits_per_weight == pytest.approx(formula, rel=1e-12)
    assert adpq.bits_per_weight(qw) == pytest.approx(pw.bits_per_weight, rel=1e-12)


def test_docstring_example() -> None:
    """3-bit, G = 128, α = 0.5 %, K = N = 4096 → 3.355 bits per weight."""
    k = n = 4096
    nnz = round(0.005 * k * n)
    pw = packed.PackedWeight(
        k=k,
        n=n,
        bits=3,
        group_size=128,
        codes=np.zeros((n, bitpack.packed_row_bytes(k, 3)), np.uint8),
        scales=np.zeros((n, 32), np.float16),
        zero_points=np.zeros((n, 32), np.uint8),
        outlier_ptr=np.zeros(n + 1, np.int32),
        outlier_idx=np.zeros(nnz, np.uint16),
        outlier_val=np.zeros(nnz, np.float16),
    )
    assert round(pw.bits_per_weight, 3) == 3.355


def test_validate_names_the_bad_tensor() -> None:
    pw = formats.pack(_quantized(100, 4, 32))
    with pytest.raises(ValueError, match="scales"):
        formats.validate(dataclasses.replace(pw, scales=pw.scales.astype(np.float32)))
    with pytest.raises(ValueError, match="codes"):
        formats.validate(dataclasses.replace(pw, codes=pw.codes[:, :-1]))
    bad_idx = pw.outlier_idx.copy()
    bad_idx[0] = 100
    with pytest.raises(ValueError, match="index >= K=100"):
        formats.validate(dataclasses.replace(pw, outlier_idx=bad_idx))
    with pytest.raises(ValueError, match="outlier_scale"):
        formats.validate(dataclasses.replace(pw, outlier_scale=np.ones(N, np.float16)))

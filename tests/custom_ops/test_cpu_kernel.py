"""The CPU AdpQMatMul kernel against the executable spec (adpq_onnx.ops.reference)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from adpq_onnx.ops import reference

pytestmark = pytest.mark.requires_custom_ops

# max |Y - Y_ref| / max |Y_ref| in float32 (both accumulate in float32, in different orders).
MAX_REL_ERR_FP32 = 1e-5


def assert_close(y: np.ndarray, ref: np.ndarray) -> None:
    """float32: norm-wise relative error; float16: within one fp16 rounding of the reference."""
    assert y.dtype == ref.dtype and y.shape == ref.shape
    scale = float(np.abs(ref.astype(np.float32)).max(initial=0.0)) or 1.0
    err = np.abs(y.astype(np.float32) - ref.astype(np.float32))
    if y.dtype == np.float32:
        assert err.max(initial=0.0) <= MAX_REL_ERR_FP32 * scale
    else:
        ulp = np.spacing(np.abs(ref)).astype(np.float32)  # fp16 spacing at each value
        assert np.all(err <= ulp + MAX_REL_ERR_FP32 * scale)


def run_case(
    adpq,
    rng,
    *,
    k,
    n,
    bits,
    group_size,
    lead=(3,),
    a_dtype=np.float32,
    bias=False,
    outlier_ratio=0.01,
    outlier_dtype="float16",
    no_outlier_rows=None,
    as_initializers=True,
    threads=0,
):
    pw = adpq.quantized(rng, k, n, bits, group_size, outlier_ratio, outlier_dtype)
    if no_outlier_rows is not None:
        pw = adpq.drop_outliers(pw, no_outlier_rows)
    b = rng.standard_normal(n).astype(a_dtype) if bias else None
    model, feeds = adpq.one_node_model(
        a_dtype, adpq.node_inputs(pw, b), adpq.attrs_of(pw), as_initializers=as_initializers
    )
    a = rng.standard_normal((*lead, k)).astype(a_dtype)
    y = adpq.session(model, threads).run(None, {"A": a, **feeds})[0]
    ref = reference.adpq_matmul(a, pw, b)
    assert_close(y, ref)
    return model, feeds, a, y


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("a_dtype", [np.float32, np.float16])
def test_bits_and_dtypes_ragged_last_group(adpq, rng, bits, a_dtype):
    # K=576 with groups of 128: 4 full groups and a last one of 64.
    run_case(adpq, rng, k=576, n=33, bits=bits, group_size=128, lead=(5,), a_dtype=a_dtype)


@pytest.mark.parametrize("lead", [(), (1,), (4,), (2, 3), (2, 1, 3)], ids=str)
def test_leading_shapes(adpq, rng, lead):
    _, _, _, y = run_case(adpq, rng, k=96, n=17, bits=4, group_size=32, lead=lead)
    assert y.shape == (*lead, 17)


@pytest.mark.parametrize(
    ("k", "group_size"), [(1, 32), (45, 64), (100, 32), (300, 96), (1000, 256)]
)
def test_k_not_a_multiple_of_32(adpq, rng, k, group_size):
    run_case(adpq, rng, k=k, n=9, bits=3, group_size=group_size)


@pytest.mark.parametrize("a_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("outlier_dtype", ["float16", "int8"])
def test_bias_and_outlier_dtypes(adpq, rng, a_dtype, outlier_dtype):
    run_case(
        adpq,
        rng,
        k=160,
        n=24,
        bits=3,
        group_size=64,
        a_dtype=a_dtype,
        bias=True,
        outlier_ratio=0.03,
        outlier_dtype=outlier_dtype,
    )


@pytest.mark.parametrize("a_dtype", [np.float32, np.float16])
def test_int8_outliers_without_bias(adpq, rng, a_dtype):
    # With int8 values and no bias, the node's inputs are "..., outlier_val, '', outlier_scale".
    model, *_ = run_case(
        adpq,
        rng,
        k=128,
        n=8,
        bits=2,
        group_size=32,
        a_dtype=a_dtype,
        outlier_ratio=0.05,
        outlier_dtype="int8",
    )
    assert model.graph.node[0].input[7] == ""


def test_no_outliers_at_all(adpq, rng):
    model, *_ = run_case(adpq, rng, k=200, n=12, bits=4, group_size=64, outlier_ratio=0.0)
    nnz = [t for t in model.graph.initializer if t.name == "outlier_idx"][0].dims
    assert list(nnz) == [0]


def test_rows_without_outliers(adpq, rng):
    run_case(
        adpq,
        rng,
        k=256,
        n=20,
        bits=3,
        group_size=128,
        outlier_ratio=0.02,
        no_outlier_rows=np.arange(0, 20, 3),
    )


def test_single_output_channel(adpq, rng):
    run_case(adpq, rng, k=320, n=1, bits=8, group_size=32, lead=(2, 2), bias=True)


@pytest.mark.parametrize("a_dtype", [np.float32, np.float16])
def test_weights_fed_at_run_time(adpq, rng, a_dtype):
    run_case(
        adpq,
        rng,
        k=192,
        n=16,
        bits=2,
        group_size=64,
        a_dtype=a_dtype,
        bias=True,
        as_initializers=False,
    )


def test_empty_leading_dimension(adpq, rng):
    _, _, _, y = run_case(adpq, rng, k=64, n=5, bits=4, group_size=32, lead=(0,))
    assert y.shape == (0, 5)


@pytest.mark.parametrize("m", [1, 3, 70])
def test_threads_do_not_change_the_result(adpq, rng, m):
    # Many tiles of output channels; m=70 takes the large-tile (prefill) path.
    model, feeds, a, y1 = run_case(
        adpq, rng, k=544, n=300, bits=3, group_size=32, lead=(m,), bias=True, threads=1
    )
    y4 = adpq.session(model, threads=4).run(None, {"A": a, **feeds})[0]
    np.testing.assert_array_equal(y1, y4)


def test_random_shapes(adpq):
    gen = np.random.default_rng(2024)
    for _ in range(12):
        group_size = int(gen.choice([32, 64, 96, 128, 256]))
        lead = tuple(int(d) for d in gen.integers(1, 4, size=gen.integers(0, 3)))
        run_case(
            adpq,
            gen,
            k=int(gen.integers(1, 700)),
            n=int(gen.integers(1, 50)),
            bits=int(gen.choice([2, 3, 4, 8])),
            group_size=group_size,
            lead=lead,
            a_dtype=gen.choice([np.float32, np.float16]),
            bias=bool(gen.integers(2)),
            outlier_ratio=float(gen.choice([0.0, 0.01, 0.1])),
            outlier_dtype=str(gen.choice(["float16", "int8"])),
        )


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_dequantized_weight_is_bit_exact(adpq, rng, bits):
    # A = I[K] makes every output a single product 1 * B[k, n]: the C++ unpack, dequantization
    # and outlier add must reproduce numpy's B exactly.
    k, n = 200, 11
    pw = adpq.quantized(rng, k, n, bits, 64, outlier_ratio=0.05, outlier_dtype="int8")
    model, _ = adpq.one_node_model(np.float32, adpq.node_inputs(pw, None), adpq.attrs_of(pw))
    y = adpq.session(model).run(None, {"A": np.eye(k, dtype=np.float32)})[0]
    np.testing.assert_array_equal(y, reference.dequantize_b(pw))


def test_agrees_with_reference_evaluator(adpq, rng):
    # The same model through onnx.reference with the OpRun spec and through ORT.
    pw = adpq.quantized(rng, 130, 7, 4, 64)
    b = rng.standard_normal(7).astype(np.float32)
    model, _ = adpq.one_node_model(np.float32, adpq.node_inputs(pw, b), adpq.attrs_of(pw))
    a = rng.standard_normal((2, 130)).astype(np.float32)
    ref = ReferenceEvaluator(model, new_ops=[reference.AdpQMatMul]).run(None, {"A": a})[0]
    assert_close(adpq.session(model).run(None, {"A": a})[0], ref)

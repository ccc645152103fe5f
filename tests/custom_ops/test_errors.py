"""Bad inputs and attributes make ORT raise an error naming the input; the process survives.

The weights are graph inputs of unknown shape here, so that ORT itself checks nothing and every
case reaches the kernel's own validation.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from adpq_onnx.ops import reference

pytestmark = pytest.mark.requires_custom_ops

K, N, BITS, GROUP = 64, 6, 3, 32
# A kernel that cannot be created fails the session's initialization with this class.
INIT_ERRORS = (ort_errors.RuntimeException, ort_errors.InvalidArgument, ort_errors.Fail)


@pytest.fixture
def weight(adpq, rng):
    return adpq.quantized(rng, K, N, BITS, GROUP, outlier_ratio=0.05)


@pytest.fixture
def int8_weight(adpq, rng):
    return adpq.quantized(rng, K, N, BITS, GROUP, outlier_ratio=0.05, outlier_dtype="int8")


def run(adpq, inputs, a, attrs=None):
    attrs = attrs or {"K": K, "N": N, "bits": BITS, "block_size": GROUP, "packing": 2}
    model, feeds = adpq.one_node_model(a.dtype, inputs, attrs, as_initializers=False)
    return adpq.session(model).run(None, {"A": a, **feeds})[0]


def a_of(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape or (2, K)).astype(dtype)


def replaced(adpq, pw, bias=None, **changes):
    inputs = adpq.node_inputs(pw, bias)
    inputs.update(changes)
    return inputs


def test_wrong_k_in_a(adpq, rng, weight):
    with pytest.raises(
        ort_errors.InvalidArgument, match="A has K=63 at its last dimension but attribute K=64"
    ):
        run(adpq, adpq.node_inputs(weight, None), a_of(rng, 2, 63))


def test_scalar_a(adpq, rng, weight):
    with pytest.raises(ort_errors.InvalidArgument, match="A must have at least 1 dimension"):
        run(adpq, adpq.node_inputs(weight, None), np.array(1.0, dtype=np.float32))


def test_a_of_unsupported_type(adpq, rng, weight):
    with pytest.raises(ort_errors.InvalidArgument, match="A must be float32 or float16, got int32"):
        run(adpq, adpq.node_inputs(weight, None), np.ones((2, K), dtype=np.int32))


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("codes", (N, 20), r"codes has shape \[6, 20\] but K=64, N=6, bits=3 need \[6, 24\]"),
        ("codes", (N + 1, 24), r"codes has shape \[7, 24\]"),
        ("scales", (N, 3), r"scales has shape \[6, 3\] but .*block_size=32 need \[6, 2\]"),
        ("zero_points", (N,), r"zero_points has shape \[6\]"),
        ("outlier_ptr", (N,), r"outlier_ptr has shape \[6\] but N=6 needs \[N \+ 1\]"),
    ],
)
def test_wrong_shapes(adpq, rng, weight, name, shape, message):
    bad = np.zeros(shape, dtype=weight.tensors()[name].dtype)
    with pytest.raises(ort_errors.InvalidArgument, match=message):
        run(adpq, replaced(adpq, weight, **{name: bad}), a_of(rng))


def test_outlier_ptr_not_monotone(adpq, rng, weight):
    ptr = weight.outlier_ptr.copy()
    ptr[2], ptr[3] = ptr[3] + 1, ptr[2]
    message = r"outlier_ptr is not monotone: outlier_ptr\[2\]=\d+ > outlier_ptr\[3\]"
    with pytest.raises(ort_errors.InvalidArgument, match=message):
        run(adpq, replaced(adpq, weight, outlier_ptr=ptr), a_of(rng))


def test_outlier_ptr_not_starting_at_zero(adpq, rng, weight):
    ptr = weight.outlier_ptr.copy()
    ptr[0] = 1
    with pytest.raises(ort_errors.InvalidArgument, match=r"outlier_ptr\[0\]=1"):
        run(adpq, replaced(adpq, weight, outlier_ptr=ptr), a_of(rng))


def test_outlier_ptr_end_is_not_nnz(adpq, rng, weight):
    ptr = weight.outlier_ptr.copy()
    ptr[-1] += 5
    with pytest.raises(ort_errors.InvalidArgument, match=r"outlier_ptr\[N=6\]=\d+ but .* nnz="):
        run(adpq, replaced(adpq, weight, outlier_ptr=ptr), a_of(rng))


def test_outlier_idx_out_of_range(adpq, rng, weight):
    idx = weight.outlier_idx.copy()
    idx[-1] = K
    message = rf"outlier_idx\[{idx.size - 1}\]=64 \(row 5\) is out of range for K=64"
    with pytest.raises(ort_errors.InvalidArgument, match=message):
        run(adpq, replaced(adpq, weight, outlier_idx=idx), a_of(rng))


def test_outlier_val_length(adpq, rng, weight):
    with pytest.raises(ort_errors.InvalidArgument, match=r"outlier_val has shape"):
        run(adpq, replaced(adpq, weight, outlier_val=weight.outlier_val[:-1]), a_of(rng))


def test_int8_values_without_outlier_scale(adpq, rng, int8_weight):
    with pytest.raises(
        ort_errors.InvalidArgument, match="outlier_val is int8 but outlier_scale .* is missing"
    ):
        run(adpq, replaced(adpq, int8_weight, outlier_scale=None), a_of(rng))


def test_outlier_scale_with_float16_values(adpq, rng, weight):
    scale = np.ones(N, dtype=np.float16)
    with pytest.raises(ort_errors.InvalidArgument, match="outlier_scale is given but outlier_val"):
        run(adpq, replaced(adpq, weight, outlier_scale=scale), a_of(rng))


def test_outlier_scale_shape(adpq, rng, int8_weight):
    scale = np.ones(N + 2, dtype=np.float16)
    with pytest.raises(ort_errors.InvalidArgument, match=r"outlier_scale has shape \[8\]"):
        run(adpq, replaced(adpq, int8_weight, outlier_scale=scale), a_of(rng))


def test_bias_shape_and_type(adpq, rng, weight):
    with pytest.raises(ort_errors.InvalidArgument, match=r"bias has shape \[5\] but N=6"):
        run(adpq, adpq.node_inputs(weight, np.zeros(N - 1, np.float32)), a_of(rng))
    with pytest.raises(ort_errors.InvalidArgument, match="bias must have A's type float32"):
        run(adpq, adpq.node_inputs(weight, np.zeros(N, np.float16)), a_of(rng))


@pytest.mark.parametrize(
    ("attr", "value", "message"),
    [
        ("bits", 5, "attribute bits=5 must be 2, 3, 4 or 8"),
        ("block_size", 48, "attribute block_size=48 must be a multiple of 32"),
        ("block_size", 512, "attribute block_size=512"),
        ("K", 0, "attribute K=0 must be >= 1"),
    ],
)
def test_bad_attributes(adpq, rng, weight, attr, value, message):
    attrs = {"K": K, "N": N, "bits": BITS, "block_size": GROUP, "packing": 2, attr: value}
    with pytest.raises(INIT_ERRORS, match=message):
        run(adpq, adpq.node_inputs(weight, None), a_of(rng), attrs)


def test_missing_attribute(adpq, rng, weight):
    with pytest.raises(INIT_ERRORS, match="attribute N .* is missing"):
        run(
            adpq,
            adpq.node_inputs(weight, None),
            a_of(rng),
            {"K": K, "bits": BITS, "block_size": GROUP, "packing": 2},
        )


def test_3bit_codes_of_the_old_layout_are_refused(adpq, rng, weight):
    # A 3-bit node without packing=2 was written by adpq-onnx 0.1 (per-block bit planes): a
    # clear error at session creation instead of silently wrong outputs.
    with pytest.raises(INIT_ERRORS, match="packing=2 .* adpq-onnx 0.1"):
        run(
            adpq,
            adpq.node_inputs(weight, None),
            a_of(rng),
            {"K": K, "N": N, "bits": 3, "block_size": GROUP},
        )


def test_session_still_works_after_errors(adpq, rng, weight):
    model, feeds = adpq.one_node_model(
        np.float32, adpq.node_inputs(weight, None), adpq.attrs_of(weight), as_initializers=False
    )
    session = adpq.session(model)
    bad = dict(feeds, outlier_idx=np.full_like(weight.outlier_idx, K))
    for _ in range(3):
        with pytest.raises(ort_errors.InvalidArgument):
            session.run(None, {"A": a_of(rng), **bad})
    a = a_of(rng)
    y = session.run(None, {"A": a, **feeds})[0]
    np.testing.assert_allclose(y, reference.adpq_matmul(a, weight), rtol=1e-5, atol=1e-6)

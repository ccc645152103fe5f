"""Property-based: the CPU AdpQMatMul equals the numpy reference over random shapes, bits,
groups, outlier densities and dtypes; and a wrong shape or type is an ORT error, never a crash.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from adpq_onnx.ops import reference

pytestmark = pytest.mark.requires_custom_ops

# Relative to max |Y|: float32 accumulation order; float16 output rounding.
MAX_REL_DIFF = {np.float32: 1e-4, np.float16: 4e-3}
ORT_ERRORS = (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.RuntimeException)
_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@st.composite
def cases(draw):
    bits = draw(st.sampled_from([2, 3, 4, 8]))
    group = draw(st.sampled_from([32, 64, 128, 256]))
    k = draw(st.integers(1, 600))
    n = draw(st.integers(1, 48))
    rows = draw(st.integers(1, 5))
    ratio = draw(st.sampled_from([0.0, 0.01, 0.1]))
    odtype = draw(st.sampled_from(["float16", "int8"]))
    dtype = draw(st.sampled_from([np.float32, np.float16]))
    bias = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    return bits, group, k, n, rows, ratio, odtype, dtype, bias, seed


@_SETTINGS
@given(case=cases())
def test_kernel_matches_reference(adpq, case) -> None:
    bits, group, k, n, rows, ratio, odtype, dtype, with_bias, seed = case
    rng = np.random.default_rng(seed)
    pw = adpq.quantized(rng, k, n, bits, group, outlier_ratio=ratio, outlier_dtype=odtype)
    bias = rng.standard_normal(n).astype(dtype) if with_bias else None
    a = rng.standard_normal((rows, k)).astype(dtype)
    model, _ = adpq.one_node_model(dtype, adpq.node_inputs(pw, bias), adpq.attrs_of(pw))
    got = adpq.session(model).run(None, {"A": a})[0].astype(np.float32)
    expected = reference.adpq_matmul(a.astype(np.float32), pw, bias).astype(np.float32)
    scale = max(1.0, float(np.abs(expected).max()))
    assert np.abs(got - expected).max() <= MAX_REL_DIFF[dtype] * scale


@_SETTINGS
@given(
    k_delta=st.sampled_from([-1, 1, 32]),
    a_dtype=st.sampled_from([np.float32, np.float16, np.float64, np.int32]),
)
def test_wrong_a_is_an_error_not_a_crash(adpq, k_delta, a_dtype) -> None:
    rng = np.random.default_rng(0)
    pw = adpq.quantized(rng, 64, 8, 4, 32)
    model, _ = adpq.one_node_model(np.float32, adpq.node_inputs(pw, None), adpq.attrs_of(pw))
    sess = adpq.session(model)
    a = rng.standard_normal((2, 64 + k_delta)).astype(a_dtype)
    with pytest.raises(ORT_ERRORS):
        sess.run(None, {"A": a})

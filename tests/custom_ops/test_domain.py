"""The Python contract (adpq_onnx.ops.spec) and the C++ library agree on the op's identity.

custom_ops/include/adpq/format.h holds kAdpqDomain and the op name; a one-node model built from
spec.DOMAIN, spec.OP_TYPE and spec.INPUTS only runs if they match.
"""

from __future__ import annotations

import numpy as np
import pytest

from adpq_onnx.ops import reference, spec

pytestmark = pytest.mark.requires_custom_ops


def test_spec_domain_runs(adpq, rng):
    # All 9 inputs of spec.INPUTS present (bias and int8 outliers with their scale).
    pw = adpq.quantized(rng, 64, 4, 4, 32, outlier_dtype="int8")
    bias = np.ones(4, dtype=np.float32)
    inputs = adpq.node_inputs(pw, bias)
    model, _ = adpq.one_node_model(np.float32, inputs, adpq.attrs_of(pw))
    node = model.graph.node[0]
    assert (node.domain, node.op_type, len(node.input)) == (
        spec.DOMAIN,
        spec.OP_TYPE,
        len(spec.INPUTS),
    )
    assert sorted(a.name for a in node.attribute) == sorted(spec.ATTRIBUTES)
    a = rng.standard_normal((1, 64)).astype(np.float32)
    y = adpq.session(model).run(None, {"A": a})[0]
    np.testing.assert_allclose(y, reference.adpq_matmul(a, pw, bias), rtol=1e-5, atol=1e-6)


def test_other_domain_is_not_served(adpq, rng):
    pw = adpq.quantized(rng, 64, 4, 4, 32)
    model, _ = adpq.one_node_model(
        np.float32, adpq.node_inputs(pw, None), adpq.attrs_of(pw), domain=spec.DOMAIN + "_other"
    )
    with pytest.raises(Exception, match=spec.OP_TYPE):
        adpq.session(model)

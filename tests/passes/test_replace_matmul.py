"""ReplaceMatMulWithAdpQPass: MatMul → AdpQMatMul wiring, bias fusion, contract checks."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper

from adpq_onnx.config import AdpQConfig
from adpq_onnx.formats.packed import PackedWeight
from adpq_onnx.ops import reference, spec

if importlib.util.find_spec("adpq_onnx.passes") is None:
    pytest.skip(
        "adpq_onnx.passes exists only once installed (the wheel maps passes/ into it)",
        allow_module_level=True,
    )

from adpq_onnx.passes import (
    QuantizeWeightsPass,
    QuantPlan,
    ReplaceMatMulWithAdpQPass,
    SelectMatMulsPass,
    WeightPlan,
)

FLOAT = 1


def _packed(entry):
    """The PackedWeight behind a quantized plan entry (its initializers and attributes)."""
    arrays = {k: v.const_value.numpy() for k, v in entry.inputs.items()}
    return PackedWeight.from_op(entry.attrs, arrays)


def _dequant(entry):
    return reference.dequantize_b(_packed(entry))


def _replace(model, config=None):
    config = config or AdpQConfig(group_size=32, outlier_dtype="float16")
    plan = QuantPlan()
    SelectMatMulsPass(config, plan)(model)
    QuantizeWeightsPass(config, plan)(model)
    return ReplaceMatMulWithAdpQPass(plan)(model), plan


def test_replaces_matmul(matmul_model, rng, run_reference) -> None:
    model = matmul_model(k=96, n=8)
    result, plan = _replace(model)
    assert result.modified
    (node,) = [n for n in model.graph if n.op_type != "MatMul"]
    assert (node.domain, node.op_type, node.name) == (spec.DOMAIN, spec.OP_TYPE, "mm")
    attrs = {k: a.as_int() for k, a in node.attributes.items()}
    assert attrs == {"K": 96, "N": 8, "bits": 4, "block_size": 32}
    assert model.opset_imports[spec.DOMAIN] == spec.DOMAIN_VERSION
    assert node.outputs[0].name == "y" and node.outputs[0] is model.graph.outputs[0]
    assert [v.name for v in node.inputs[1:]] == [f"W.adpq.{k}" for k in spec.PACKED_INPUTS]
    x = rng.standard_normal((2, 96)).astype(np.float32)
    (y,) = run_reference(model, {"x": x})
    np.testing.assert_allclose(y, x @ _dequant(plan.weights["W"]), rtol=1e-5)


def _matmul_add(build, rng, bias, *, swap=False):
    w = rng.standard_normal((32, 4)).astype(np.float32)
    add_inputs = ["b", "h"] if swap else ["h", "b"]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
        helper.make_node("Add", add_inputs, ["y"], name="add"),
    ]
    return build(nodes, [("x", FLOAT, [3, 32])], [("y", FLOAT, None)], {"W": w, "b": bias})


@pytest.mark.parametrize("swap", [False, True])
def test_fuses_bias_add(build, rng, run_reference, swap: bool) -> None:
    bias = rng.standard_normal(4).astype(np.float32)
    model = _matmul_add(build, rng, bias, swap=swap)
    x = rng.standard_normal((3, 32)).astype(np.float32)
    _, plan = _replace(model)
    (node,) = list(model.graph)
    assert node.inputs[spec.INPUTS.index("bias")].name == "b"
    assert node.outputs[0].name == "y"
    expect = x @ _dequant(plan.weights["W"]) + bias
    np.testing.assert_allclose(run_reference(model, {"x": x})[0], expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "bias", [np.ones((1, 4), np.float32), np.ones(4, np.float16), np.ones(1, np.float32)]
)
def test_keeps_add_that_is_not_a_bias(build, rng, bias) -> None:
    model = _matmul_add(build, rng, bias)
    _replace(model)
    assert [n.op_type for n in model.graph] == [spec.OP_TYPE, "Add"]


def test_int8_outliers_leave_bias_slot_empty(matmul_model) -> None:
    model = matmul_model(k=64, n=4)
    _replace(model, AdpQConfig(group_size=32, outlier_dtype="int8"))
    node = next(n for n in model.graph if n.domain == spec.DOMAIN)
    assert len(node.inputs) == len(spec.INPUTS)
    assert node.inputs[spec.INPUTS.index("bias")] is None
    assert node.inputs[-1].name == "W.adpq.outlier_scale"


def test_shared_weight_shares_packed_inputs(build, rng) -> None:
    w = rng.standard_normal((32, 32)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="a"),
        helper.make_node("MatMul", ["h", "W"], ["y"], name="b"),
    ]
    model = build(nodes, [("x", FLOAT, [1, 32])], [("y", FLOAT, None)], {"W": w})
    _replace(model)
    a, b = list(model.graph)
    assert a.inputs[1:] == b.inputs[1:]


def test_requires_quantized_weights(matmul_model) -> None:
    model = matmul_model()
    plan = QuantPlan()
    plan.weights["W"] = WeightPlan(model.graph.initializers["W"], [model.graph.node(0)])
    with pytest.raises(ir.passes.PreconditionError, match="'W' was not quantized"):
        ReplaceMatMulWithAdpQPass(plan)(model)


def test_empty_plan(build) -> None:
    model = build([], [("x", FLOAT, [1])], [("x", FLOAT, [1])])
    result, _ = _replace(model)
    assert not result.modified and spec.DOMAIN not in model.opset_imports

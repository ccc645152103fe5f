"""CleanupPass and the contract checks: dead code, orphans, opsets, order."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnx_ir as ir
import pytest
from onnx import helper

from adpq_onnx.config import AdpQConfig
from adpq_onnx.ops import spec

if importlib.util.find_spec("adpq_onnx.passes") is None:
    pytest.skip(
        "adpq_onnx.passes exists only once installed (the wheel maps passes/ into it)",
        allow_module_level=True,
    )

from adpq_onnx.passes import (
    CleanupPass,
    FoldTransposedWeightsPass,
    QuantizeWeightsPass,
    QuantPlan,
    ReplaceMatMulWithAdpQPass,
    SelectMatMulsPass,
    _contracts,
)

FLOAT = 1


def test_removes_replaced_weights_and_dead_nodes(build, rng) -> None:
    w = rng.standard_normal((8, 32)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]),
        helper.make_node("MatMul", ["x", "Wt"], ["y"], name="mm"),
    ]
    model = build(nodes, [("x", FLOAT, [1, 32])], [("y", FLOAT, None)], {"W": w})
    config, plan = AdpQConfig(group_size=32), QuantPlan()
    for p in (
        FoldTransposedWeightsPass(config),
        SelectMatMulsPass(config, plan),
        QuantizeWeightsPass(config, plan),
        ReplaceMatMulWithAdpQPass(plan),
    ):
        p(model)
    assert CleanupPass()(model).modified
    assert [n.op_type for n in model.graph] == [spec.OP_TYPE]
    assert all(".adpq." in name for name in model.graph.initializers)
    assert model.opset_imports[spec.DOMAIN] == spec.DOMAIN_VERSION


def test_drops_unused_domain_and_orphans(build) -> None:
    node = helper.make_node("Relu", ["x"], ["y"])
    model = build(
        [node], [("x", FLOAT, [1])], [("y", FLOAT, None)], {"orphan": np.ones(3, np.float32)}
    )
    model.opset_imports[spec.DOMAIN] = spec.DOMAIN_VERSION
    assert CleanupPass()(model).modified
    assert "orphan" not in model.graph.initializers
    assert spec.DOMAIN not in model.opset_imports


def test_sorts_nodes(build) -> None:
    nodes = [helper.make_node("Relu", ["h"], ["y"]), helper.make_node("Neg", ["x"], ["h"])]
    model = build(nodes, [("x", FLOAT, [1])], [("y", FLOAT, None)])
    assert CleanupPass()(model).modified
    assert [n.op_type for n in model.graph] == ["Neg", "Relu"]


def test_leaves_clean_graph_alone(build) -> None:
    model = build(
        [helper.make_node("Relu", ["x"], ["y"])], [("x", FLOAT, [1])], [("y", FLOAT, None)]
    )
    assert not CleanupPass()(model).modified


def test_empty_graph(build) -> None:
    model = build([], [("x", FLOAT, [1])], [("x", FLOAT, [1])])
    assert not CleanupPass()(model).modified


def test_contract_checks(build) -> None:
    node = helper.make_node(spec.OP_TYPE, ["x"], ["y"], domain=spec.DOMAIN, name="q")
    model = build(
        [node], [("x", FLOAT, [1])], [("y", FLOAT, None)], {"orphan": np.ones(1, np.float32)}
    )
    model.opset_imports.pop(spec.DOMAIN, None)
    with pytest.raises(ir.passes.PostconditionError, match="'q' uses domain"):
        _contracts.check_domain_imported(model)
    with pytest.raises(ir.passes.PostconditionError, match="orphan"):
        _contracts.check_no_orphan_initializers(model)

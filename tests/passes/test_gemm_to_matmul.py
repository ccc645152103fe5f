"""GemmToMatMulPass: positive, negative and empty-graph cases."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from onnx import helper

from adpq_onnx.config import AdpQConfig

if importlib.util.find_spec("adpq_onnx.passes") is None:
    pytest.skip(
        "adpq_onnx.passes exists only once installed (the wheel maps passes/ into it)",
        allow_module_level=True,
    )

from adpq_onnx.passes import GemmToMatMulPass, QuantPlan

FLOAT = 1


def _gemm_model(build, rng, *, c: bool = True, **attrs):
    w = rng.standard_normal((6, 8)).astype(np.float32)  # [N, K] with transB=1
    inits = {"W": w if attrs.get("transB", 0) else w.T.copy()}
    inputs = ["x", "W"]
    if c:
        inits["C"] = rng.standard_normal(6).astype(np.float32)
        inputs.append("C")
    node = helper.make_node("Gemm", inputs, ["y"], name="gemm", **attrs)
    return build([node], [("x", FLOAT, [3, 8])], [("y", FLOAT, [3, 6])], inits)


def _run_pass(model, config=None):
    plan = QuantPlan()
    result = GemmToMatMulPass(config or AdpQConfig(), plan)(model)
    return result, plan


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("with_c", [True, False])
def test_rewrites_to_matmul(build, rng, run_reference, trans_b: int, with_c: bool) -> None:
    model = _gemm_model(build, rng, c=with_c, transB=trans_b)
    x = rng.standard_normal((3, 8)).astype(np.float32)
    (expect,) = run_reference(model, {"x": x})
    result, plan = _run_pass(model)
    assert result.modified and not plan.skipped
    ops = [n.op_type for n in model.graph]
    assert ops == (["MatMul", "Add"] if with_c else ["MatMul"])
    matmul = model.graph.node(0)
    b = matmul.inputs[1]
    assert b.is_initializer() and b.shape.dims == (8, 6)
    assert b.name == ("W.T" if trans_b else "W")
    assert model.graph.outputs[0].name == "y"
    (got,) = run_reference(model, {"x": x})
    np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)


def test_shared_weight_is_transposed_once(build, rng) -> None:
    w = rng.standard_normal((4, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "W"], ["h"], transB=1),
        helper.make_node("Gemm", ["h", "W"], ["y"], transB=1),
    ]
    model = build(nodes, [("x", FLOAT, [2, 4])], [("y", FLOAT, None)], {"W": w})
    _run_pass(model)
    bs = {n.inputs[1] for n in model.graph}
    assert len(bs) == 1 and next(iter(bs)).name == "W.T"


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        ({"alpha": 2.0}, "alpha=2.0 is not 1"),
        ({"transA": 1}, "transA=1"),
        ({"beta": 0.5}, "beta=0.5 is not 1"),
    ],
)
def test_leaves_scaled_or_transposed_a(build, rng, attrs: dict, reason: str) -> None:
    model = _gemm_model(build, rng, transB=1, **attrs)
    result, plan = _run_pass(model)
    assert not result.modified
    assert [n.op_type for n in model.graph] == ["Gemm"]
    assert [s.reason for s in plan.skipped] == [reason]


def test_beta_without_c_is_fine(build, rng) -> None:
    model = _gemm_model(build, rng, c=False, transB=1, beta=0.5)
    assert _run_pass(model)[0].modified


def test_leaves_runtime_b(build) -> None:
    node = helper.make_node("Gemm", ["x", "w"], ["y"], name="g")
    model = build([node], [("x", FLOAT, [2, 3]), ("w", FLOAT, [3, 4])], [("y", FLOAT, None)])
    result, plan = _run_pass(model)
    assert not result.modified
    assert plan.skipped[0].reason == "B is not a constant initializer"


def test_leaves_tied_embedding_unless_asked(build, rng) -> None:
    emb = rng.standard_normal((10, 4)).astype(np.float32)  # [V, H]
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["h"]),
        helper.make_node("Gemm", ["h2", "E"], ["logits"], transB=1, name="lm_head"),
    ]
    inputs = [("ids", 7, [2]), ("h2", FLOAT, [2, 4])]
    model = build(nodes, inputs, [("h", FLOAT, None), ("logits", FLOAT, None)], {"E": emb})
    result, plan = _run_pass(model)
    assert not result.modified
    assert plan.skipped[0].reason == "shared with Gather (tied embedding)"
    result, _ = _run_pass(model, AdpQConfig(quantize_embeddings=True))
    assert result.modified


def test_empty_graph(build) -> None:
    model = build([], [("x", FLOAT, [1])], [("x", FLOAT, [1])])
    result, plan = _run_pass(model)
    assert not result.modified and not plan.skipped

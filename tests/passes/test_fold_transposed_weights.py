"""FoldTransposedWeightsPass: positive, negative and empty-graph cases."""

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

from adpq_onnx.passes import FoldTransposedWeightsPass

FLOAT, FLOAT16, INT64 = 1, 10, 7


def _transposed_matmul(build, w, *, perm=(1, 0), extra_nodes=(), extra_outputs=()):
    transpose = helper.make_node("Transpose", ["W"], ["Wt"], name="tr", perm=list(perm))
    nodes = [transpose, helper.make_node("MatMul", ["x", "Wt"], ["y"], name="mm"), *extra_nodes]
    inputs = [("x", FLOAT, [2, w.shape[-1]]), ("ids", INT64, [3])]
    return build(nodes, inputs, [("y", FLOAT, None), *extra_outputs], {"W": w})


def _matmul(model):
    return next(n for n in model.graph if n.op_type == "MatMul")


def test_folds_transpose_into_initializer(build, rng, run_reference) -> None:
    w = rng.standard_normal((5, 4)).astype(np.float32)  # [N, K]
    model = _transposed_matmul(build, w)
    x = rng.standard_normal((2, 4)).astype(np.float32)
    (expect,) = run_reference(model, {"x": x, "ids": np.zeros(3, np.int64)})
    assert FoldTransposedWeightsPass(AdpQConfig())(model).modified
    b = _matmul(model).inputs[1]
    assert b.is_initializer() and b.name == "W.T"
    np.testing.assert_array_equal(b.const_value.numpy(), w.T)
    (got,) = run_reference(model, {"x": x, "ids": np.zeros(3, np.int64)})
    np.testing.assert_array_equal(got, expect)


def test_folds_under_a_cast(build, rng) -> None:
    w = rng.standard_normal((5, 4)).astype(np.float16)
    nodes = [
        helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]),
        helper.make_node("Cast", ["Wt"], ["Wf"], to=FLOAT),
        helper.make_node("MatMul", ["x", "Wf"], ["y"]),
    ]
    model = build(nodes, [("x", FLOAT, [2, 4])], [("y", FLOAT, None)], {"W": w})
    assert FoldTransposedWeightsPass(AdpQConfig())(model).modified
    cast = next(n for n in model.graph if n.op_type == "Cast")
    assert cast.inputs[0].name == "W.T" and cast.inputs[0].dtype.name == "FLOAT16"


def test_leaves_transpose_with_other_consumers(build, rng) -> None:
    w = rng.standard_normal((4, 4)).astype(np.float32)
    relu = helper.make_node("Relu", ["Wt"], ["r"])
    model = _transposed_matmul(build, w, extra_nodes=[relu], extra_outputs=[("r", FLOAT, None)])
    assert not FoldTransposedWeightsPass(AdpQConfig())(model).modified


def test_leaves_other_perms_and_ranks(build, rng) -> None:
    w3 = rng.standard_normal((2, 3, 4)).astype(np.float32)
    model = _transposed_matmul(build, w3, perm=(0, 2, 1))
    assert not FoldTransposedWeightsPass(AdpQConfig())(model).modified


def test_leaves_tied_embedding_unless_asked(build, rng) -> None:
    emb = rng.standard_normal((6, 4)).astype(np.float32)  # [V, H]; lm_head = h · Eᵀ
    gather = helper.make_node("Gather", ["W", "ids"], ["e"])
    model = _transposed_matmul(build, emb, extra_nodes=[gather], extra_outputs=[("e", FLOAT, None)])
    assert not FoldTransposedWeightsPass(AdpQConfig())(model).modified
    assert FoldTransposedWeightsPass(AdpQConfig(quantize_embeddings=True))(model).modified
    # the Gather still reads the original
    assert next(n for n in model.graph if n.op_type == "Gather").inputs[0].name == "W"


def test_empty_graph(build) -> None:
    model = build([], [("x", FLOAT, [1])], [("x", FLOAT, [1])])
    assert not FoldTransposedWeightsPass(AdpQConfig())(model).modified

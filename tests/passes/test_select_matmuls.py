"""SelectMatMulsPass: what is selected, what is skipped and why; never changes the graph."""

from __future__ import annotations

import importlib.util

import ml_dtypes
import numpy as np
import pytest
from onnx import helper, numpy_helper

from adpq_onnx.config import AdpQConfig

if importlib.util.find_spec("adpq_onnx.passes") is None:
    pytest.skip(
        "adpq_onnx.passes exists only once installed (the wheel maps passes/ into it)",
        allow_module_level=True,
    )

from adpq_onnx.passes import QuantPlan, SelectMatMulsPass

FLOAT, INT32, INT64, FLOAT16, BOOL = 1, 6, 7, 10, 9


def _select(model, config=None):
    plan = QuantPlan()
    before = [n.op_type for n in model.graph]
    result = SelectMatMulsPass(config or AdpQConfig(), plan)(model)
    assert not result.modified and [n.op_type for n in model.graph] == before
    return plan


def _reasons(plan):
    return [s.reason for s in plan.skipped]


def test_selects_constant_float_weight(matmul_model) -> None:
    plan = _select(matmul_model())
    assert list(plan.weights) == ["W"]
    assert [n.name for n in plan.weights["W"].nodes] == ["mm"]
    assert not plan.skipped


def test_shared_weight_is_one_entry(build, rng) -> None:
    w = rng.standard_normal((4, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="a"),
        helper.make_node("MatMul", ["h", "W"], ["y"], name="b"),
    ]
    model = build(nodes, [("x", FLOAT, [1, 4])], [("y", FLOAT, None)], {"W": w})
    plan = _select(model)
    assert [n.name for n in plan.weights["W"].nodes] == ["a", "b"]


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16])
def test_looks_through_cast_of_low_precision_weight(build, rng, dtype) -> None:
    w = rng.standard_normal((4, 3)).astype(dtype)
    nodes = [
        helper.make_node("Cast", ["W"], ["Wf"], to=FLOAT),
        helper.make_node("MatMul", ["x", "Wf"], ["y"], name="mm"),
    ]
    model = build(nodes, [("x", FLOAT, [1, 4])], [("y", FLOAT, None)], {"W": w})
    assert list(_select(model).weights) == ["W"]


def test_selects_float16_matmul(build, rng) -> None:
    w = rng.standard_normal((4, 3)).astype(np.float16)
    node = helper.make_node("MatMul", ["x", "W"], ["y"])
    model = build([node], [("x", FLOAT16, [1, 4])], [("y", FLOAT16, None)], {"W": w})
    assert list(_select(model).weights) == ["W"]


def _one_matmul(build, b, *, a_type=FLOAT, b_input=False, before=(), extra=None):
    nodes = [*before, helper.make_node("MatMul", ["x", "B"], ["y"], name="mm")]
    inputs = [("x", a_type, None)]
    if b_input:
        inputs.append(("B", FLOAT, list(b.shape)))
    return build(nodes, inputs, [("y", a_type, None)], {"B": b, **(extra or {})})


def test_skips_runtime_b(build) -> None:
    node = helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")
    model = build([node], [("x", FLOAT, None), ("w", FLOAT, [2, 2])], [("y", FLOAT, None)])
    assert _reasons(_select(model)) == ["B is not a constant initializer"]


def test_skips_computed_b(build, rng) -> None:
    w = rng.standard_normal((2, 2)).astype(np.float32)
    nodes = [
        helper.make_node("Relu", ["W"], ["B"], name="act"),
        helper.make_node("MatMul", ["x", "B"], ["y"], name="mm"),
    ]
    model = build(nodes, [("x", FLOAT, None)], [("y", FLOAT, None)], {"W": w})
    assert _reasons(_select(model)) == ["B is computed by Relu node 'act', not constant"]


def test_skips_initializer_that_is_also_an_input(build, rng) -> None:
    model = _one_matmul(build, rng.standard_normal((2, 2)).astype(np.float32), b_input=True)
    assert "also a graph input" in _reasons(_select(model))[0]


def test_skips_integer_weight(build) -> None:
    model = _one_matmul(build, np.ones((2, 2), np.int32), a_type=INT32)
    assert _reasons(_select(model)) == ["B is INT32, not a float type"]


def test_skips_non_2d_weight(build) -> None:
    model = _one_matmul(build, np.ones((2, 2, 2), np.float32))
    assert _reasons(_select(model))[0].startswith("B is not 2-D")


def test_skips_empty_weight(build) -> None:
    model = _one_matmul(build, np.ones((0, 3), np.float32))
    assert _reasons(_select(model)) == ["B is empty"]


def test_skips_constant_a(build) -> None:
    nodes = [helper.make_node("MatMul", ["A", "B"], ["y"], name="mm")]
    inits = {"A": np.ones((1, 2), np.float32), "B": np.ones((2, 2), np.float32)}
    model = build(nodes, [], [("y", FLOAT, None)], inits)
    assert _reasons(_select(model))[0].startswith("A is constant too")


def test_skips_k_beyond_outlier_index(build) -> None:
    model = _one_matmul(build, np.ones((65537, 1), np.float32))
    assert _reasons(_select(model)) == ["K=65537 exceeds 65536 (uint16 outlier index)"]


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (AdpQConfig(include="attn"), "not matched by include='attn'"),
        (AdpQConfig(exclude="^mm$"), "excluded by exclude='^mm$'"),
        (AdpQConfig(exclude="W"), "excluded by exclude='W'"),
        (AdpQConfig(min_size=64 * 32 + 1), "too small (2048 < min_size=2049)"),
    ],
)
def test_config_filters(matmul_model, config: AdpQConfig, reason: str) -> None:
    plan = _select(matmul_model(), config)
    assert not plan.weights and _reasons(plan) == [reason]


def test_include_matches_node_or_weight_name(matmul_model) -> None:
    assert _select(matmul_model(), AdpQConfig(include="^mm$")).weights
    assert _select(matmul_model(), AdpQConfig(include="^W$", min_size=2048)).weights


def test_skips_tied_embedding_unless_asked(build, rng) -> None:
    e = rng.standard_normal((4, 4)).astype(np.float32)
    gather = helper.make_node("Gather", ["B", "ids"], ["g"])
    nodes = [gather, helper.make_node("MatMul", ["x", "B"], ["y"], name="mm")]
    model = build(
        nodes,
        [("x", FLOAT, None), ("ids", INT64, [1])],
        [("y", FLOAT, None), ("g", FLOAT, None)],
        {"B": e},
    )
    assert _reasons(_select(model)) == ["shared with Gather (tied embedding)"]
    assert _select(model, AdpQConfig(quantize_embeddings=True)).weights


def test_skips_matmul_in_subgraph(build, rng) -> None:
    w = rng.standard_normal((2, 2)).astype(np.float32)
    body = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["z"], name="inner")],
        "then",
        [],
        [helper.make_tensor_value_info("z", FLOAT, None)],
        [numpy_helper.from_array(w, "W")],
    )
    node = helper.make_node("If", ["c"], ["y"], then_branch=body, else_branch=body)
    model = build([node], [("c", BOOL, []), ("x", FLOAT, [1, 2])], [("y", FLOAT, None)])
    plan = _select(model)
    assert not plan.weights
    assert {s.reason for s in plan.skipped} == {"inside a subgraph (If/Loop/Scan body)"}


def test_empty_graph(build) -> None:
    model = build([], [("x", FLOAT, [1])], [("x", FLOAT, [1])])
    plan = _select(model)
    assert not plan.weights and not plan.skipped


def _embedding_and_head(build, table, head, *, via_transpose=False):
    """Gather(table, ids) and logits = x · head: an embedding and an lm_head weight."""
    gather_in = "T" if via_transpose else "E"
    nodes = [helper.make_node("MatMul", ["x", "H"], ["y"], name="lm_head")]
    if via_transpose:
        nodes.insert(0, helper.make_node("Transpose", ["E"], ["T"], perm=[1, 0]))
    nodes.insert(0, helper.make_node("Gather", [gather_in, "ids"], ["g"], name="embed"))
    inits = {"E": table} if head is None else {"E": table, "H": head}
    return build(
        nodes,
        [("x", FLOAT, None), ("ids", INT64, [1])],
        [("y", FLOAT, None), ("g", FLOAT, None)],
        inits,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_skips_lm_head_that_copies_the_embedding_transposed(build, rng, dtype) -> None:
    # torch.onnx's legacy exporter writes a tied lm_head as its own [d, V] copy of the table.
    table = rng.standard_normal((48, 16)).astype(dtype)
    model = _embedding_and_head(build, table, np.ascontiguousarray(table.T))
    plan = _select(model)
    assert not plan.weights
    assert _reasons(plan) == ["tied to embedding E (by content)"]
    assert list(_select(model, AdpQConfig(quantize_embeddings=True)).weights) == ["H"]


def test_skips_lm_head_that_copies_a_transposed_table(build, rng) -> None:
    # The table is gathered through a Transpose, the head is a same-shaped copy of it.
    table = rng.standard_normal((16, 48)).astype(np.float32)
    model = _embedding_and_head(build, table, table.copy(), via_transpose=True)
    assert _reasons(_select(model)) == ["tied to embedding E (by content)"]


def test_square_copy_is_found_in_either_orientation(build, rng) -> None:
    table = rng.standard_normal((32, 32)).astype(np.float32)
    for head in (table.copy(), np.ascontiguousarray(table.T)):
        model = _embedding_and_head(build, table, head)
        assert _reasons(_select(model)) == ["tied to embedding E (by content)"]


@pytest.mark.parametrize("where", ["sampled row", "other row"])
def test_near_copy_of_the_embedding_is_quantized(build, rng, where) -> None:
    table = rng.standard_normal((48, 16)).astype(np.float32)
    head = np.ascontiguousarray(table.T)
    # Row 0 is among the sampled rows; row 1 is only seen by the full compare.
    head[3, 0 if where == "sampled row" else 1] += 1e-3
    plan = _select(_embedding_and_head(build, table, head))
    assert list(plan.weights) == ["H"] and not plan.skipped


def test_content_tie_needs_the_same_dtype(build, rng) -> None:
    table = rng.standard_normal((48, 16)).astype(np.float32)
    head = np.ascontiguousarray(table.T).astype(np.float16)
    nodes = [
        helper.make_node("Gather", ["E", "ids"], ["g"], name="embed"),
        helper.make_node("MatMul", ["x", "H"], ["y"], name="lm_head"),
    ]
    model = build(
        nodes,
        [("x", FLOAT16, None), ("ids", INT64, [1])],
        [("y", FLOAT16, None), ("g", FLOAT, None)],
        {"E": table, "H": head},
    )
    assert list(_select(model).weights) == ["H"]


def test_skips_weight_gathered_through_a_transpose(build, rng) -> None:
    # onnxruntime-genai's builder, tied float: MatMul(x, W[d, V]) and Gather(Transpose(W)).
    w = rng.standard_normal((16, 48)).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["W"], ["T"], perm=[1, 0]),
        helper.make_node("Gather", ["T", "ids"], ["g"], name="embed"),
        helper.make_node("MatMul", ["x", "W"], ["y"], name="lm_head"),
    ]
    model = build(
        nodes,
        [("x", FLOAT, None), ("ids", INT64, [1])],
        [("y", FLOAT, None), ("g", FLOAT, None)],
        {"W": w},
    )
    assert _reasons(_select(model)) == ["shared with Gather (tied embedding)"]
    assert list(_select(model, AdpQConfig(quantize_embeddings=True)).weights) == ["W"]


def test_gather_indices_are_not_a_table(build, rng) -> None:
    # A weight that only reaches a Gather's indices input is no embedding.
    w = rng.standard_normal((4, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Cast", ["W"], ["i"], to=INT64),
        helper.make_node("Gather", ["D", "i"], ["g"]),
        helper.make_node("MatMul", ["x", "W"], ["y"], name="mm"),
    ]
    model = build(
        nodes,
        [("x", FLOAT, None)],
        [("y", FLOAT, None), ("g", FLOAT, None)],
        {"W": w, "D": np.ones((8, 2), np.float32)},
    )
    assert list(_select(model).weights) == ["W"]


def test_skips_matmul_in_loop_body(build, rng) -> None:
    # The body reads W from the outer scope; the main-graph MatMul on W is still chosen.
    w = rng.standard_normal((2, 2)).astype(np.float32)
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["h_in", "W"], ["h_out"], name="inner"),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", INT64, []),
            helper.make_tensor_value_info("cond_in", BOOL, []),
            helper.make_tensor_value_info("h_in", FLOAT, [1, 2]),
        ],
        [
            helper.make_tensor_value_info("cond_out", BOOL, []),
            helper.make_tensor_value_info("h_out", FLOAT, [1, 2]),
        ],
    )
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h0"], name="outer"),
        helper.make_node("Loop", ["n", "", "h0"], ["y"], body=body),
    ]
    model = build(nodes, [("n", INT64, []), ("x", FLOAT, [1, 2])], [("y", FLOAT, None)], {"W": w})
    plan = _select(model)
    assert [n.name for n in plan.weights["W"].nodes] == ["outer"]
    assert [(s.node, s.reason) for s in plan.skipped] == [
        ("inner", "inside a subgraph (If/Loop/Scan body)")
    ]

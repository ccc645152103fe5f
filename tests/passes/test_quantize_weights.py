"""QuantizeWeightsPass: packed initializers per planned weight, once each, with stats."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from onnx import helper

from adpq_onnx import formats
from adpq_onnx.config import AdpQConfig
from adpq_onnx.formats.packed import PackedWeight
from adpq_onnx.ops import reference, spec

if importlib.util.find_spec("adpq_onnx.passes") is None:
    pytest.skip(
        "adpq_onnx.passes exists only once installed (the wheel maps passes/ into it)",
        allow_module_level=True,
    )

from adpq_onnx.passes import QuantizeWeightsPass, QuantPlan, SelectMatMulsPass

FLOAT = 1


def _packed(entry):
    """The PackedWeight behind a quantized plan entry (its initializers and attributes)."""
    arrays = {k: v.const_value.numpy() for k, v in entry.inputs.items()}
    return PackedWeight.from_op(entry.attrs, arrays)


def _dequant(entry):
    return reference.dequantize_b(_packed(entry))


def _quantize(model, config=None):
    config = config or AdpQConfig(group_size=32, outlier_dtype="float16")
    plan = QuantPlan()
    SelectMatMulsPass(config, plan)(model)
    return QuantizeWeightsPass(config, plan)(model), plan


def test_adds_packed_initializers_in_op_order(matmul_model) -> None:
    model = matmul_model(k=100, n=8)
    result, plan = _quantize(model)
    assert result.modified
    entry = plan.weights["W"]
    assert list(entry.inputs) == list(spec.PACKED_INPUTS)
    assert [v.name for v in entry.inputs.values()] == [f"W.adpq.{k}" for k in spec.PACKED_INPUTS]
    for value in entry.inputs.values():
        assert model.graph.initializers[value.name] is value
    formats.validate(_packed(entry))
    # the weight packed is Bᵀ: rows are output channels
    w = model.graph.initializers["W"].const_value.numpy()
    assert (entry.attrs["K"], entry.attrs["N"]) == w.shape == (100, 8)


def test_records_layer_stats(matmul_model) -> None:
    model = matmul_model(k=256, n=16)
    _, plan = _quantize(model, AdpQConfig(bits=3, group_size=64, outlier_ratio=0.01))
    (layer,) = plan.layers()
    assert (layer.name, layer.nodes, layer.K, layer.N) == ("W", ("mm",), 256, 16)
    assert (layer.bits, layer.group_size) == (3, 64)
    assert layer.nnz == 16 * round(0.01 * 256)
    assert layer.outlier_fraction == pytest.approx(layer.nnz / (256 * 16))
    assert layer.original_bytes == 256 * 16 * 4
    assert layer.packed_bytes == _packed(plan.weights["W"]).nbytes
    assert layer.bits_per_weight == pytest.approx(layer.packed_bytes * 8 / (256 * 16))
    assert 0 < layer.weight_rel_error < 0.25 and layer.seconds >= 0
    w = model.graph.initializers["W"].const_value.numpy()
    deq = _dequant(plan.weights["W"])
    rel = np.linalg.norm(deq - w) / np.linalg.norm(w)
    assert layer.weight_rel_error == pytest.approx(rel, rel=1e-5)


def test_shared_weight_quantized_once(build, rng) -> None:
    w = rng.standard_normal((64, 64)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="a"),
        helper.make_node("MatMul", ["h", "W"], ["y"], name="b"),
    ]
    model = build(nodes, [("x", FLOAT, [1, 64])], [("y", FLOAT, None)], {"W": w})
    _, plan = _quantize(model)
    assert [layer.nodes for layer in plan.layers()] == [("a", "b")]
    assert sum(".adpq.codes" in name for name in model.graph.initializers) == 1


def test_non_finite_weight_is_skipped(matmul_model) -> None:
    w = np.ones((32, 4), np.float32)
    w[3, 1] = np.nan
    result, plan = _quantize(matmul_model(k=32, n=4, weight=w))
    assert not result.modified and not plan.weights and plan.rejected == ["W"]
    assert "NaN" in plan.skipped[0].reason
    assert plan.skipped[0].weight == "W"


def test_names_stay_unique(build, rng) -> None:
    w = rng.standard_normal((32, 4)).astype(np.float32)
    taken = np.zeros(1, np.float32)
    node = helper.make_node("MatMul", ["x", "W"], ["y"])
    model = build(
        [node], [("x", FLOAT, [1, 32])], [("y", FLOAT, None)], {"W": w, "W.adpq.codes": taken}
    )
    _, plan = _quantize(model)
    assert plan.weights["W"].inputs["codes"].name == "W.adpq.codes.1"


def test_empty_plan(build) -> None:
    model = build([], [("x", FLOAT, [1])], [("x", FLOAT, [1])])
    result, plan = _quantize(model)
    assert not result.modified and not plan.layers()

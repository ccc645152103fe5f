"""Tiny models built in code for the pass tests, and a reference runner.

(`rng` comes from tests/conftest.py.)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from adpq_onnx.ops.reference import AdpQMatMul

FLOAT = onnx.TensorProto.FLOAT

ModelBuilder = Callable[..., ir.Model]


def _build(
    nodes: Sequence[onnx.NodeProto],
    inputs: Sequence[tuple[str, int, Sequence[Any]]],
    outputs: Sequence[tuple[str, int, Sequence[Any] | None]],
    initializers: dict[str, np.ndarray] | None = None,
    opset: int = 17,
) -> ir.Model:
    """An onnx_ir model from onnx.helper pieces; (name, elem_type, shape) for inputs/outputs."""
    graph = helper.make_graph(
        list(nodes),
        "test",
        [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs],
        [numpy_helper.from_array(a, n) for n, a in (initializers or {}).items()],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return ir.from_proto(proto)


@pytest.fixture
def build() -> ModelBuilder:
    return _build


def _run(model: ir.Model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    proto = ir.to_proto(model)
    return list(ReferenceEvaluator(proto, new_ops=[AdpQMatMul]).run(None, feeds))


@pytest.fixture
def run_reference() -> Callable[[ir.Model, dict[str, np.ndarray]], list[np.ndarray]]:
    """Run a model with onnx.reference (AdpQMatMul included)."""
    return _run


@pytest.fixture
def matmul_model(rng: np.random.Generator) -> Callable[..., ir.Model]:
    """y = x · W for W[K, N] (float32 unless given)."""

    def make(k: int = 64, n: int = 32, weight: np.ndarray | None = None) -> ir.Model:
        w = rng.standard_normal((k, n)).astype(np.float32) if weight is None else weight
        node = helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")
        return _build([node], [("x", FLOAT, [2, k])], [("y", FLOAT, None)], {"W": w})

    return make

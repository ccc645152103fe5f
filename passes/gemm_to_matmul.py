"""GemmToMatMulPass: rewrite a Gemm with a constant weight as MatMul (+ Add of the bias)."""

from __future__ import annotations

import onnx_ir as ir

from adpq_onnx.config import AdpQConfig
from adpq_onnx.passes import _match
from adpq_onnx.passes._plan import QuantPlan

_STAGE = "gemm_to_matmul"


class GemmToMatMulPass(ir.passes.InPlacePass):
    """Canonicalize ``Gemm(A, B, C)`` to ``MatMul(A, B') [+ C]`` so later passes see one form.

    Rules:
        1. A Gemm of the main graph whose B is a constant 2-D float initializer, with alpha=1,
           transA=0, and either no C or beta=1, is rewritten.
        2. transB=0: ``MatMul(A, B)``. transB=1: ``MatMul(A, Bᵀ)`` on a new initializer
           ``<B>.T``, made once per B even when several Gemms share it.
        3. A present C becomes ``Add(MatMul(A, B'), C)``; Gemm's unidirectional broadcast of C
           to [M, N] is what Add's numpy broadcast does for a 2-D A.
        4. The output keeps its name. Every other Gemm is left alone and recorded with a reason
           (alpha / beta / transA not folded; B not constant; B tied to a Gather, whose
           transposed copy would double the weight's size).
    """

    def __init__(self, config: AdpQConfig, plan: QuantPlan) -> None:
        super().__init__()
        self.config = config
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.plan.forget(_STAGE)
        names = _match.NameScope(model.graph)
        transposed: dict[str, ir.Value] = {}
        modified = False
        for node in list(model.graph):
            if node.op_type == "Gemm" and node.domain in ("", "ai.onnx"):
                modified |= self._try_rewrite(model.graph, node, names, transposed)
        return ir.passes.PassResult(model, modified=modified)

    def _try_rewrite(
        self, graph: ir.Graph, node: ir.Node, names: _match.NameScope, cache: dict[str, ir.Value]
    ) -> bool:
        reason = self._refusal(node)
        if reason is not None:
            self.plan.skip(_STAGE, node, reason, _weight_name(node))
            return False
        a, b = node.inputs[0], node.inputs[1]
        c = node.inputs[2] if len(node.inputs) > 2 else None
        assert a is not None and b is not None and b.name is not None
        if _int_attr(node, "transB", 0):
            if b.name not in cache:
                cache[b.name] = _match.add_transposed(graph, b, names)
            b = cache[b.name]
        new_nodes = [ir.node("MatMul", [a, b], name=node.name)]
        if c is not None:
            new_nodes[0].outputs[0].name = names.fresh(f"{node.outputs[0].name}.matmul")
            bias_name = f"{node.name}.bias" if node.name else None
            new_nodes.append(ir.node("Add", [new_nodes[0].outputs[0], c], name=bias_name))
        ir.convenience.replace_nodes_and_values(
            graph, node, [node], new_nodes, node.outputs, new_nodes[-1].outputs
        )
        return True

    def _refusal(self, node: ir.Node) -> str | None:
        """Why this Gemm cannot become a MatMul, or None when it can."""
        if _float_attr(node, "alpha", 1.0) != 1.0:
            return f"alpha={_float_attr(node, 'alpha', 1.0)} is not 1"
        if _int_attr(node, "transA", 0):
            return "transA=1"
        has_c = len(node.inputs) > 2 and node.inputs[2] is not None
        if has_c and _float_attr(node, "beta", 1.0) != 1.0:
            return f"beta={_float_attr(node, 'beta', 1.0)} is not 1"
        b = _match.constant(node.inputs[1])
        if b is None:
            return "B is not a constant initializer"
        if not _match.is_float_weight(b):
            return f"B is not a 2-D float weight ({b.dtype}, shape {b.shape})"
        if not self.config.quantize_embeddings and _match.tied_gather(b) is not None:
            return "shared with Gather (tied embedding)"
        return None


def _weight_name(node: ir.Node) -> str | None:
    b = node.inputs[1] if len(node.inputs) > 1 else None
    return None if b is None else b.name


def _int_attr(node: ir.Node, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_int()


def _float_attr(node: ir.Node, name: str, default: float) -> float:
    attr = node.attributes.get(name)
    return default if attr is None else attr.as_float()

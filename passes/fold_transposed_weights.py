"""FoldTransposedWeightsPass: MatMul(A, Transpose(W)) → MatMul(A, Wᵀ) on a new initializer."""

from __future__ import annotations

import onnx_ir as ir

from adpq_onnx.config import AdpQConfig
from adpq_onnx.passes import _match


class FoldTransposedWeightsPass(ir.passes.InPlacePass):
    """Fold the Transpose of a 2-D weight that feeds MatMuls into a transposed initializer.

    Exporters often write a Linear as ``MatMul(x, Transpose(W[N, K]))``; after this pass the
    MatMul reads a constant B[K, N] that `SelectMatMulsPass` can pick.

    Rules:
        1. A main-graph Transpose with perm=[1, 0] (or no perm) of a 2-D float initializer,
           whose every consumer is a MatMul reading it as B, becomes a new initializer
           ``<W>.T``; the Transpose is left dead for `CleanupPass`.
        2. ``Cast(Transpose(W))`` is covered by rule 1 (the Cast then reads ``<W>.T``, and
           `SelectMatMulsPass` looks through the Cast). ``Transpose(Cast(W))`` is not folded.
        3. A Transpose of a weight that a Gather also reads (a tied embedding) is left alone
           unless ``quantize_embeddings``: folding would keep two copies of the weight.
        4. A Transpose with other consumers or in a subgraph is left alone.
    """

    def __init__(self, config: AdpQConfig) -> None:
        super().__init__()
        self.config = config

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        names = _match.NameScope(model.graph)
        modified = False
        for node in list(model.graph):
            if node.op_type == "Transpose" and node.domain in ("", "ai.onnx"):
                modified |= self._try_fold(model.graph, node, names)
        return ir.passes.PassResult(model, modified=modified)

    def _try_fold(self, graph: ir.Graph, node: ir.Node, names: _match.NameScope) -> bool:
        src = _match.constant(node.inputs[0])
        if src is None or not _match.is_float_weight(src):
            return False
        if _match.transpose_perm(node) not in (None, [1, 0]):
            return False
        out = node.outputs[0]
        if out.is_graph_output() or not _feeds_only_cast_or_matmul_b(out):
            return False
        if not self.config.quantize_embeddings and _match.tied_gather(src) is not None:
            return False
        folded = _match.add_transposed(graph, src, names)
        out.replace_all_uses_with(folded)
        return True


def _feeds_only_cast_or_matmul_b(value: ir.Value) -> bool:
    """Whether every use is input B of a MatMul, or a Cast whose uses all are."""
    uses = list(value.uses())
    if not uses:
        return False
    for use in uses:
        op = use.node.op_type
        if op == "MatMul" and use.idx == 1:
            continue
        if op == "Cast" and _feeds_only_cast_or_matmul_b(use.node.outputs[0]):
            continue
        return False
    return True

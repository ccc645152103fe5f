"""CleanupPass: drop what the rewrite left dead and restore a topological node order."""

from __future__ import annotations

import onnx_ir as ir
from onnx_ir.passes import common

from adpq_onnx.passes import _contracts


class CleanupPass(ir.passes.InPlacePass):
    """Remove dead nodes, orphan initializers and unused opset imports; sort the nodes.

    Rules:
        1. Nodes whose outputs nobody reads (the replaced weights' Transpose / Cast, the old
           MatMuls) and initializers nobody reads (the float weights, packed tensors of a
           weight whose nodes were not replaced) are removed (onnx_ir RemoveUnusedNodesPass).
           This runs first so that the next steps see the final set of nodes.
        2. Opset imports no node uses are removed; the AdpQ domain stays whenever an
           AdpQMatMul is left (onnx_ir RemoveUnusedOpsetsPass keeps used domains).
        3. Nodes are sorted topologically (stable), as ONNX requires.
    """

    def __init__(self) -> None:
        super().__init__()
        self._steps = ir.passes.Sequential(
            common.RemoveUnusedNodesPass(),
            common.RemoveUnusedOpsetsPass(),
            common.TopologicalSortPass(),
        )

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        result = self._steps(model)
        return ir.passes.PassResult(model, modified=result.modified)

    def ensures(self, model: ir.Model) -> None:
        _contracts.check_domain_imported(model)
        _contracts.check_no_orphan_initializers(model)

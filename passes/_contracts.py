"""Postconditions the passes promise, checked from their ``ensures``."""

from __future__ import annotations

import onnx_ir as ir

from adpq_onnx.ops import spec


def check_domain_imported(model: ir.Model) -> None:
    """Every AdpQMatMul's domain is imported, or ORT cannot resolve the op."""
    if spec.DOMAIN in model.opset_imports:
        return
    for node in ir.traversal.RecursiveGraphIterator(model.graph):
        if node.domain == spec.DOMAIN:
            raise ir.passes.PostconditionError(
                f"node '{node.name}' uses domain '{spec.DOMAIN}', which is not imported"
            )


def orphan_initializers(graph: ir.Graph) -> list[str]:
    """Names of initializers nothing reads (graph inputs and outputs count as read)."""
    return [
        name
        for name, value in graph.initializers.items()
        if not (value.uses() or value.is_graph_input() or value.is_graph_output())
    ]


def check_no_orphan_initializers(model: ir.Model) -> None:
    """A left-over initializer would silently keep the float weight in the file."""
    orphans = orphan_initializers(model.graph)
    if orphans:
        shown = ", ".join(orphans[:5])
        raise ir.passes.PostconditionError(f"{len(orphans)} orphan initializer(s): {shown}")

"""ReplaceMatMulWithAdpQPass: swap each planned MatMul for an AdpQMatMul on packed weights."""

from __future__ import annotations

import onnx_ir as ir

from adpq_onnx.ops import spec
from adpq_onnx.passes import _contracts, _match
from adpq_onnx.passes._plan import QuantPlan, WeightPlan


class ReplaceMatMulWithAdpQPass(ir.passes.InPlacePass):
    """Rewrite ``MatMul(A, B)`` as ``adpq_onnx::AdpQMatMul(A, <packed B>...)``.

    Rules:
        1. Every MatMul listed under a quantized weight of the plan is replaced; nodes that
           share a weight share its packed initializers.
        2. The new node keeps the MatMul's name and output (name, type, shape, graph-output
           role) and gets the attributes K, N, bits and block_size (`adpq_onnx.ops.spec`).
        3. When the MatMul's only consumer is an ``Add`` of a constant 1-D bias [N] of A's
           dtype, the Add is fused into the optional bias input and its output is kept instead.
        4. The opset import (spec.DOMAIN, spec.DOMAIN_VERSION) is added. The original weights
           (and any Cast feeding B) are left dead for `CleanupPass`.
    """

    def __init__(self, plan: QuantPlan, accuracy_level: int = 0) -> None:
        super().__init__()
        self.plan = plan
        self.accuracy_level = accuracy_level

    def requires(self, model: ir.Model) -> None:
        for entry in self.plan.weights.values():
            if not entry.attrs or set(entry.inputs) - set(spec.INPUTS):
                raise ir.passes.PreconditionError(f"weight '{entry.name}' was not quantized")

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = 0
        for entry in self.plan.weights.values():
            for node in entry.nodes:
                if node.graph is model.graph:  # not replaced by an earlier run
                    self._replace(model.graph, node, entry)
                    count += 1
        if count:
            model.opset_imports[spec.DOMAIN] = spec.DOMAIN_VERSION
        return ir.passes.PassResult(model, modified=bool(count))

    def ensures(self, model: ir.Model) -> None:
        _contracts.check_domain_imported(model)

    def _replace(self, graph: ir.Graph, node: ir.Node, entry: WeightPlan) -> None:
        a = node.inputs[0]
        add, bias = _match.bias_add(node, entry.attrs["N"])
        inputs: list[ir.Value | None] = [a, *(entry.inputs[k] for k in spec.PACKED_INPUTS)]
        if bias is not None or "outlier_scale" in entry.inputs:
            inputs.append(bias)  # optional: an empty slot when only outlier_scale follows
        if "outlier_scale" in entry.inputs:
            inputs.append(entry.inputs["outlier_scale"])
        attrs = dict(entry.attrs)
        if self.accuracy_level:
            attrs["accuracy_level"] = self.accuracy_level
        new = ir.node(spec.OP_TYPE, inputs, attrs, domain=spec.DOMAIN, name=node.name)
        old_nodes = [node] if add is None else [node, add]
        ir.convenience.replace_nodes_and_values(
            graph, node, old_nodes, [new], old_nodes[-1].outputs, new.outputs
        )

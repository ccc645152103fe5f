"""ReplaceMatMulWithMatMulNBitsPass: swap each planned MatMul for stock ORT's MatMulNBits."""

from __future__ import annotations

import onnx_ir as ir

from adpq_onnx.passes import _match
from adpq_onnx.passes._plan import QuantPlan, WeightPlan

MS_DOMAIN = "com.microsoft"
OP_TYPE = "MatMulNBits"
INPUTS = ("B", "scales", "zero_points")


class ReplaceMatMulWithMatMulNBitsPass(ir.passes.InPlacePass):
    """Rewrite ``MatMul(A, B)`` as ``com.microsoft::MatMulNBits(A, B, scales, zero_points)``.

    The `--target matmulnbits` counterpart of `ReplaceMatMulWithAdpQPass`: the result runs on
    stock ONNX Runtime, without the custom-op library.

    Rules:
        1. Every MatMul listed under a quantized weight of the plan is replaced; nodes that
           share a weight share its packed initializers (`formats.matmulnbits`).
        2. The new node keeps the MatMul's name and output and gets the attributes K, N, bits
           and block_size, and ``accuracy_level`` when it is not 0 (MatMulNBits' own attribute,
           with the meaning it has on AdpQMatMul: 4 = int8 activations on the CPU).
        3. A MatMul whose A dtype differs from the dtype of the weight's scales (a weight
           shared by float32 and float16 MatMuls) is left alone and recorded as skipped.
        4. ``Add(Y, bias[N])`` as the MatMul's only consumer is fused into the bias input
           (input 5; the g_idx slot before it stays empty).
        5. The opset import (com.microsoft, 1) is added; the float weights are left dead for
           `CleanupPass`.
    """

    def __init__(self, plan: QuantPlan, accuracy_level: int = 0) -> None:
        super().__init__()
        self.plan = plan
        self.accuracy_level = accuracy_level

    def requires(self, model: ir.Model) -> None:
        for entry in self.plan.weights.values():
            if not entry.attrs or tuple(entry.inputs) != INPUTS:
                raise ir.passes.PreconditionError(
                    f"weight '{entry.name}' was not packed for MatMulNBits"
                )

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        count = 0
        for entry in self.plan.weights.values():
            for node in list(entry.nodes):
                if node.graph is model.graph and self._try_replace(model.graph, node, entry):
                    count += 1
        if count:
            model.opset_imports[MS_DOMAIN] = 1
        return ir.passes.PassResult(model, modified=bool(count))

    def _try_replace(self, graph: ir.Graph, node: ir.Node, entry: WeightPlan) -> bool:
        scales = entry.inputs["scales"]
        if _match.activation_dtype(node) not in (None, scales.dtype):
            entry.nodes.remove(node)
            reason = (
                f"A is {_match.activation_dtype(node)}, the shared weight's scales {scales.dtype}"
            )
            self.plan.skip("replace_matmul_nbits", node, reason, entry.name)
            return False
        add, bias = _match.bias_add(node, entry.attrs["N"])
        inputs: list[ir.Value | None] = [node.inputs[0], *(entry.inputs[k] for k in INPUTS)]
        if bias is not None:
            inputs += [None, bias]
        attrs = dict(entry.attrs)
        if self.accuracy_level:
            attrs["accuracy_level"] = self.accuracy_level
        new = ir.node(OP_TYPE, inputs, attrs, domain=MS_DOMAIN, name=node.name)
        old_nodes = [node] if add is None else [node, add]
        ir.convenience.replace_nodes_and_values(
            graph, node, old_nodes, [new], old_nodes[-1].outputs, new.outputs
        )
        return True

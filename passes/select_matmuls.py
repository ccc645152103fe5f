"""SelectMatMulsPass (analysis only): choose the MatMuls whose weight will be quantized."""

from __future__ import annotations

import re

import onnx_ir as ir

from adpq_onnx.config import AdpQConfig
from adpq_onnx.passes import _match
from adpq_onnx.passes._plan import QuantPlan, WeightPlan

_STAGE = "select_matmuls"
# The outlier index is uint16 (adpq_onnx/formats/packed.py).
MAX_K = 65536


class SelectMatMulsPass(ir.passes.InPlacePass):
    """Record in the plan which MatMuls to quantize, grouped by weight; change nothing.

    Rules:
        1. A MatMul of the main graph is selected when its B is a constant 2-D float
           initializer (float32, float16 or bfloat16), or a Cast of one to float32/float16,
           and its A is a float32/float16 value that is not constant (both constant is
           constant folding, not ours).
        2. The weight or node name must match ``config.include`` (when set) and must not match
           ``config.exclude``; the weight must hold at least ``config.min_size`` elements and
           K ≤ 65536.
        3. A weight read by several MatMuls gets one plan entry listing them all, so it is
           quantized once and its packed tensors are shared.
        4. A weight that a Gather also reads (tied embedding) is skipped unless
           ``config.quantize_embeddings`` (then the Gather keeps the float copy). So is a
           weight whose data equals a Gather's table, transposed or not (an exporter that
           wrote the tied lm_head as its own copy, like torch.onnx's legacy exporter): shapes
           and dtypes are compared first, then sampled rows, then every byte.
        5. MatMul and Gemm nodes inside If/Loop/Scan bodies are skipped. Every MatMul not
           selected is recorded in ``plan.skipped`` with its reason.
    """

    def __init__(self, config: AdpQConfig, plan: QuantPlan) -> None:
        super().__init__()
        self.config = config
        self.plan = plan
        # Per run: the Gather tables (found on first need) and each weight's content tie.
        self._graph: ir.Graph | None = None
        self._tables: list[ir.Value] | None = None
        self._content_ties: dict[str, ir.Value | None] = {}

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.plan.forget(_STAGE)
        self.plan.weights.clear()
        self._graph, self._tables, self._content_ties = model.graph, None, {}
        for node in ir.traversal.RecursiveGraphIterator(model.graph):
            if node.op_type not in ("MatMul", "Gemm") or node.domain not in ("", "ai.onnx"):
                continue
            if not _match.in_main_graph(node, model):
                self._skip(node, "inside a subgraph (If/Loop/Scan body)")
            elif node.op_type == "MatMul":
                self._try_select(node)
        return ir.passes.PassResult(model, modified=False)

    def _try_select(self, node: ir.Node) -> bool:
        b = node.inputs[1] if len(node.inputs) > 1 else None
        weight = None if b is None else _match.weight_behind(b)[0]
        reason = _refusal(node, weight) or self._filter(node, weight)
        if reason is not None:
            self._skip(node, reason, weight)
            return False
        assert weight is not None and weight.name is not None
        entry = self.plan.weights.setdefault(weight.name, WeightPlan(weight, []))
        entry.nodes.append(node)
        return True

    def _filter(self, node: ir.Node, weight: ir.Value | None) -> str | None:
        """The config's reasons to leave an eligible weight alone."""
        assert weight is not None and weight.shape is not None
        cfg = self.config
        names = [n for n in (weight.name, node.name) if n]
        if cfg.include is not None and not any(re.search(cfg.include, n) for n in names):
            return f"not matched by include={cfg.include!r}"
        if cfg.exclude is not None and any(re.search(cfg.exclude, n) for n in names):
            return f"excluded by exclude={cfg.exclude!r}"
        k, n = weight.shape.numpy()
        if k * n < cfg.min_size:
            return f"too small ({k * n} < min_size={cfg.min_size})"
        if not cfg.quantize_embeddings:
            if _match.tied_gather(weight) is not None:
                return "shared with Gather (tied embedding)"
            table = self._content_tie(weight)
            if table is not None:
                return f"tied to embedding {table.name} (by content)"
        return None

    def _content_tie(self, weight: ir.Value) -> ir.Value | None:
        """The Gather table whose data `weight` repeats (once per weight, tables found once)."""
        assert weight.name is not None
        if weight.name not in self._content_ties:
            if self._tables is None:
                assert self._graph is not None
                self._tables = _match.gather_tables(self._graph)
            self._content_ties[weight.name] = next(
                (t for t in self._tables if _match.same_content(weight, t)), None
            )
        return self._content_ties[weight.name]

    def _skip(self, node: ir.Node, reason: str, weight: ir.Value | None = None) -> None:
        if weight is None and len(node.inputs) > 1 and node.inputs[1] is not None:
            weight = node.inputs[1]
        self.plan.skip(_STAGE, node, reason, None if weight is None else weight.name)


def _refusal(node: ir.Node, weight: ir.Value | None) -> str | None:
    """Why this MatMul's B cannot be quantized at all, or None."""
    if len(node.inputs) != 2:
        return "malformed MatMul (needs inputs A and B)"
    a, b = node.inputs
    if a is None or b is None:
        return "malformed MatMul (needs inputs A and B)"
    if weight is None:
        return _describe_runtime_b(b)
    if _match.constant(a) is not None:
        return "A is constant too (constant folding, not weight quantization)"
    if weight.dtype not in _match.FLOAT_WEIGHTS:
        return f"B is {weight.dtype}, not a float type"
    if weight.shape is None or weight.shape.rank() != 2:
        return f"B is not 2-D (shape {weight.shape})"
    if 0 in weight.shape.numpy():
        return "B is empty"
    t = _match.activation_dtype(node)
    if t is not None and t not in _match.ACTIVATIONS:
        return f"A is {t}; AdpQMatMul takes float32 or float16 activations"
    k = weight.shape[0]
    if isinstance(k, int) and k > MAX_K:
        return f"K={k} exceeds {MAX_K} (uint16 outlier index)"
    return None


def _describe_runtime_b(b: ir.Value) -> str:
    """The reason for a B that is not a constant initializer, as specific as we can say."""
    if _match.tied_gather(b) is not None:
        return "shared with Gather (tied embedding)"
    if b.is_initializer() and b.is_graph_input():
        return "B is an initializer that is also a graph input (overridable at run time)"
    producer = b.producer()
    if producer is not None:
        return f"B is computed by {producer.op_type} node '{producer.name or '?'}', not constant"
    return "B is not a constant initializer"

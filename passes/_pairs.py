"""Where planned weights meet in the graph: attention value/output pairs, SwiGLU MLPs, and
weights fed by a normalization's gain. Structure only, never names.

    attention:  v = x·B_v → Reshape[.., kv, head_dim] → (Transpose, KV-cache Concat, Unsqueeze,
                Expand, Reshape) → MatMul(probs, ·) → Transpose → Reshape → ·B_o
    SwiGLU:     Mul(g·σ(g), x·B_u)·B_d with g = x·B_g (the same x)
    norm gain:  Mul(γ, x̂) read only by MatMuls of planned weights (RMSNorm / LayerNorm's scale)

Each match is what the transform and rounding passes may rely on: on the attention path only
head-preserving ops (no bias, no RoPE), so a right-multiplication of each key/value head's
channels commutes with attention; in SwiGLU the up projection's output is read only by the Mul,
so a per-channel scale of it reaches only the down projection.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx_ir as ir

from adpq_onnx.passes._plan import QuantPlan, WeightPlan

# Ops a value head's channels may pass through unchanged in layout (last axis = head_dim).
_HEAD_PRESERVING = frozenset({"Reshape", "Transpose", "Concat", "Unsqueeze", "Expand", "Squeeze"})


@dataclasses.dataclass(frozen=True)
class AttentionPair:
    """A value projection and the output projection its heads feed."""

    v: WeightPlan
    o: WeightPlan
    head_dim: int

    @property
    def kv_heads(self) -> int:
        return _shape(self.v)[1] // self.head_dim

    @property
    def heads(self) -> int:
        return _shape(self.o)[0] // self.head_dim


@dataclasses.dataclass(frozen=True)
class SwiGLU:
    gate: WeightPlan
    up: WeightPlan
    down: WeightPlan


@dataclasses.dataclass(frozen=True)
class NormGroup:
    """Planned weights B[K, ·] that all read Mul(γ, x̂), γ a 1-D gain of K values."""

    gain: ir.Value
    weights: tuple[WeightPlan, ...]


def _shape(entry: WeightPlan) -> tuple[int, int]:
    assert entry.weight.shape is not None
    k, n = entry.weight.shape.numpy()
    return int(k), int(n)


def _single_reader(plan: QuantPlan) -> dict[int, WeightPlan]:
    """MatMul node id → its weight's plan, for weights read directly by exactly one MatMul."""
    out: dict[int, WeightPlan] = {}
    for entry in plan.weights.values():
        if len(entry.nodes) == 1 and entry.nodes[0].inputs[1] is entry.weight:
            out[id(entry.nodes[0])] = entry
    return out


def _readers(value: ir.Value) -> list[ir.Node]:
    return [use.node for use in value.uses()]


def attention_pairs(plan: QuantPlan) -> list[AttentionPair]:
    by_node = _single_reader(plan)
    pairs = []
    for entry in by_node.values():
        found = _follow_heads(entry, by_node)
        if found is not None:
            pairs.append(found)
    return pairs


def _follow_heads(v: WeightPlan, by_node: dict[int, WeightPlan]) -> AttentionPair | None:
    out = v.nodes[0].outputs[0]
    readers = _readers(out)
    if len(readers) != 1 or readers[0].op_type != "Reshape":
        return None
    head_dim = _last_dim(readers[0])
    if head_dim is None or _shape(v)[1] % head_dim:
        return None
    # Walk forward; every path must end in graph outputs (the KV cache) or one output projection
    # reached through exactly one attention MatMul (probs · v).
    frontier, seen, ends, attn = [readers[0]], set(), [], 0
    while frontier:
        node = frontier.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node.op_type == "Shape":  # reads the cache's length, not its values
            continue
        if node.op_type == "MatMul":
            if id(node) in by_node:
                ends.append(by_node[id(node)])
                continue
            attn += 1
        elif node.op_type not in _HEAD_PRESERVING:
            return None
        for value in node.outputs:
            frontier.extend(_readers(value))
    if attn != 1 or len(ends) != 1:
        return None
    o = ends[0]
    if _shape(o)[0] % head_dim or (_shape(o)[0] // head_dim) % (_shape(v)[1] // head_dim):
        return None
    if not _attention_matmul_reads_value(v, o):
        return None
    return AttentionPair(v, o, head_dim)


def _attention_matmul_reads_value(v: WeightPlan, o: WeightPlan) -> bool:
    """The value path enters the attention MatMul as its B (probs · v), never as A."""
    a = o.nodes[0].inputs[0]
    node = a.producer() if a is not None else None
    while node is not None and node.op_type in _HEAD_PRESERVING:
        node = node.inputs[0].producer() if node.inputs[0] is not None else None
    if node is None or node.op_type != "MatMul":
        return False
    src = node.inputs[0]
    # A must not come from the value projection (then v would be the probabilities side).
    return src is None or src.producer() is not v.nodes[0]


def _last_dim(reshape: ir.Node) -> int | None:
    """The constant last entry of a Reshape's target shape (an initializer or a Concat's)."""
    shape = reshape.inputs[1] if len(reshape.inputs) > 1 else None
    if shape is None:
        return None
    last: ir.Value | None = shape
    producer = shape.producer()
    if producer is not None and producer.op_type == "Concat" and producer.inputs:
        last = producer.inputs[-1]
    if last is None or last.const_value is None:
        return None
    data = np.asarray(last.const_value.numpy()).reshape(-1)
    return int(data[-1]) if data.size and int(data[-1]) > 0 else None


def swiglus(plan: QuantPlan) -> list[SwiGLU]:
    by_node = _single_reader(plan)
    found = []
    for down in by_node.values():
        mul = down.nodes[0].inputs[0].producer() if down.nodes[0].inputs[0] else None
        if mul is None or mul.op_type != "Mul" or len(_readers(mul.outputs[0])) != 1:
            continue
        parts = [x.producer() if x is not None else None for x in mul.inputs]
        for i in (0, 1):
            up_node, silu = parts[i], parts[1 - i]
            if up_node is None or silu is None or id(up_node) not in by_node:
                continue
            if len(_readers(up_node.outputs[0])) != 1:
                continue
            gate = _silu_gate(silu, by_node)
            if gate is not None and gate.nodes[0].inputs[0] is up_node.inputs[0]:
                found.append(SwiGLU(gate, by_node[id(up_node)], down))
                break
    return found


def _silu_gate(silu: ir.Node, by_node: dict[int, WeightPlan]) -> WeightPlan | None:
    """The gate projection of Mul(g, Sigmoid(g)) (either order)."""
    if silu.op_type != "Mul" or len(silu.inputs) != 2:
        return None
    a, b = silu.inputs
    if a is None or b is None:
        return None
    for g, s in ((a, b), (b, a)):
        sig = s.producer()
        if sig is not None and sig.op_type == "Sigmoid" and sig.inputs[0] is g:
            node = g.producer()
            if node is not None and id(node) in by_node:
                return by_node[id(node)]
    return None


def norm_groups(plan: QuantPlan) -> list[NormGroup]:
    by_node = _single_reader(plan)
    groups: dict[int, tuple[ir.Value, list[WeightPlan]]] = {}
    for entry in by_node.values():
        a = entry.nodes[0].inputs[0]
        mul = a.producer() if a is not None else None
        if mul is None or mul.op_type != "Mul" or id(mul) in groups:
            continue
        gain = next((x for x in mul.inputs if _is_gain(x, _shape(entry)[0])), None)
        if gain is None or len(list(gain.uses())) != 1:
            continue
        readers = _readers(mul.outputs[0])
        if all(r.op_type == "MatMul" and id(r) in by_node for r in readers):
            groups[id(mul)] = (gain, [by_node[id(r)] for r in readers])
    return [NormGroup(g, tuple(ws)) for g, ws in groups.values()]


def _is_gain(value: ir.Value | None, k: int) -> bool:
    return (
        value is not None
        and value.is_initializer()
        and not value.is_graph_input()
        and value.const_value is not None
        and value.shape is not None
        and value.shape.numpy() == (k,)
    )

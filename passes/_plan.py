"""The shared record the passes of one pipeline read and write (never a global).

`SelectMatMulsPass` fills `QuantPlan.weights` (one entry per weight, listing every MatMul
that reads it, so that a shared weight is quantized once); `QuantizeWeightsPass` adds the
packed tensors and the stats; `ReplaceMatMulWithAdpQPass` rewires the nodes. Every pass may
append to `QuantPlan.skipped` with a reason a user can act on.
"""

from __future__ import annotations

import dataclasses

import onnx_ir as ir

from adpq_onnx.report import LayerReport, SkippedNode


@dataclasses.dataclass
class WeightPlan:
    """One weight B[K, N] chosen for quantization and the MatMuls that read it.

    Attributes:
        weight: The 2-D float initializer.
        nodes: MatMuls reading it as input B (directly or through a Cast to float).
        attrs: The new node's attributes K, N, bits, block_size, once `QuantizeWeightsPass` ran.
        inputs: The packed initializers, in the op's input order (``codes`` .. ``outlier_scale``
            for AdpQMatMul, ``B``, ``scales``, ``zero_points`` for MatMulNBits).
        layer: Its report line.
    """

    weight: ir.Value
    nodes: list[ir.Node]
    attrs: dict[str, int] = dataclasses.field(default_factory=dict)
    inputs: dict[str, ir.Value] = dataclasses.field(default_factory=dict)
    layer: LayerReport | None = None

    @property
    def name(self) -> str:
        assert self.weight.name is not None, "initializers always have a name"
        return self.weight.name


@dataclasses.dataclass(frozen=True)
class ProxySpec:
    """How to build a weight's rounding proxy H from its neighbours (`quant.proxies`).

    Attributes:
        kind: The function of `adpq_onnx.quant.proxies` that builds H.
        partners: Argument name of that function → initializer name of the partner weight.
        dims: Its integer arguments (heads, head_dim, ...).
        side: ``input`` (H over K) or ``output`` (H over N).
    """

    kind: str
    partners: tuple[tuple[str, str], ...]
    dims: tuple[tuple[str, int], ...] = ()
    side: str = "input"


@dataclasses.dataclass
class _Skip:
    stage: str
    record: SkippedNode


class QuantPlan:
    """Decisions and results of one pipeline run, shared by its passes."""

    def __init__(self) -> None:
        self.weights: dict[str, WeightPlan] = {}
        self.rejected: list[str] = []  # weights whose data cannot be quantized (NaN / Inf)
        self.proxies: dict[str, ProxySpec] = {}  # weight name → its rounding proxy, if paired
        self.transforms: list[str] = []  # one line per transform folded into the weights
        self._skips: list[_Skip] = []

    @property
    def skipped(self) -> list[SkippedNode]:
        return [s.record for s in self._skips]

    def skip(self, stage: str, node: ir.Node, reason: str, weight: str | None = None) -> None:
        """Record that `stage` (a pass name) left `node` alone, and why."""
        record = SkippedNode(node_label(node), node.op_type, weight, reason)
        self._skips.append(_Skip(stage, record))

    def forget(self, stage: str) -> None:
        """Drop what `stage` recorded before, so that running a pass twice records once."""
        self._skips = [s for s in self._skips if s.stage != stage]

    def layers(self) -> list[LayerReport]:
        return [w.layer for w in self.weights.values() if w.layer is not None]


def node_label(node: ir.Node) -> str:
    """The node's name, or a stand-in naming its op and first output when it has none."""
    if node.name:
        return node.name
    out = node.outputs[0].name if node.outputs else None
    return f"<{node.op_type} -> {out}>"

"""PairWeightsPass: give each weight that meets another in the graph its rounding proxy."""

from __future__ import annotations

import onnx_ir as ir

from adpq_onnx.config import AdpQConfig
from adpq_onnx.passes import _pairs
from adpq_onnx.passes._plan import ProxySpec, QuantPlan


class PairWeightsPass(ir.passes.InPlacePass):
    """Record in ``plan.proxies`` how to build each paired weight's proxy H (analysis only).

    Rules (only with ``config.rounding.method == "paired"``; otherwise the plan is left empty):
        1. Attention value/output pairs (`_pairs.attention_pairs`): the output projection
           rounds against ``attention_output_input`` (H over its K, from the value weight),
           the value projection against ``attention_value_output`` (H over its N, from the
           output weight).
        2. SwiGLU MLPs (`_pairs.swiglus`): down against ``mlp_down_input`` (gate, up), up
           against ``mlp_up_output`` (down, gate), gate against ``mlp_gate_output`` (down, up).
        3. Other weights (Q, K, ...) get no proxy and round to nearest.
        4. With ``config.rounding.gain_aware``, the normalization gain γ in front of the
           weights read on the input side (`_pairs.norm_groups`) joins the partners: the proxy
           assumes the normalized x̂ white rather than x̂ ⊙ γ.
        5. Partners are named by initializer: H is built from their float values as they are
           when `QuantizeWeightsPass` runs (after any transforms), never from quantized ones.
    """

    def __init__(self, config: AdpQConfig, plan: QuantPlan) -> None:
        super().__init__()
        self.config = config
        self.plan = plan

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        self.plan.proxies.clear()
        if self.config.rounding.method != "paired":
            return ir.passes.PassResult(model, modified=False)
        proxies = self.plan.proxies
        # The gain in front of each weight read after a normalization (γ-aware proxies).
        gains: dict[str, str] = {}
        if self.config.rounding.gain_aware:
            for group in _pairs.norm_groups(self.plan):
                for entry in group.weights:
                    gains[entry.name] = str(group.gain.name)

        def gain(weight: str) -> tuple[tuple[str, str], ...]:
            return (("gain", gains[weight]),) if weight in gains else ()

        for p in _pairs.attention_pairs(self.plan):
            proxies[p.o.name] = ProxySpec(
                "attention_output_input",
                (("b_v", p.v.name), *gain(p.v.name)),
                (("heads", p.heads), ("head_dim", p.head_dim)),
                "input",
            )
            proxies[p.v.name] = ProxySpec(
                "attention_value_output",
                (("b_o", p.o.name),),
                (("kv_heads", p.kv_heads), ("head_dim", p.head_dim)),
                "output",
            )
        for m in _pairs.swiglus(self.plan):
            g, u, d = m.gate.name, m.up.name, m.down.name
            gain_gu = gain(g) if gain(g) == gain(u) else ()
            proxies[d] = ProxySpec(
                "mlp_down_input", (("b_gate", g), ("b_up", u), *gain_gu), (), "input"
            )
            proxies[u] = ProxySpec(
                "mlp_up_output", (("b_down", d), ("b_gate", g), *gain(g)), (), "output"
            )
            proxies[g] = ProxySpec(
                "mlp_gate_output", (("b_down", d), ("b_up", u), *gain(u)), (), "output"
            )
        return ir.passes.PassResult(model, modified=False)

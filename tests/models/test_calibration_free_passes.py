"""Pairing, learned transforms and paired rounding on a real exported model (stories260K)."""

from __future__ import annotations

import onnx_ir as ir
import pytest

from adpq_onnx import AdpQConfig
from adpq_onnx.passes import (
    FoldTransposedWeightsPass,
    GemmToMatMulPass,
    LearnTransformsPass,
    PairWeightsPass,
    QuantPlan,
    SelectMatMulsPass,
    _pairs,
)


def _selected(path, cfg: AdpQConfig) -> tuple[ir.Model, QuantPlan]:
    model = ir.load(path)
    plan = QuantPlan()
    for p in (
        GemmToMatMulPass(cfg, plan),
        FoldTransposedWeightsPass(cfg),
        SelectMatMulsPass(cfg, plan),
    ):
        p(model)
    return model, plan


def test_pairs_are_found_by_structure(stories_export) -> None:
    _, plan = _selected(stories_export.path, AdpQConfig())
    attn = _pairs.attention_pairs(plan)
    mlps = _pairs.swiglus(plan)
    norms = _pairs.norm_groups(plan)
    assert len(attn) == len(mlps) == 5 and len(norms) == 10
    for p in attn:
        assert "v_proj" in p.v.name and "o_proj" in p.o.name
        assert (p.head_dim, p.heads, p.kv_heads) == (8, 8, 4)
    for m in mlps:
        assert ("gate_proj", "up_proj", "down_proj") == tuple(
            w.name.split(".")[-3] for w in (m.gate, m.up, m.down)
        )
    assert sorted(len(g.weights) for g in norms) == [2] * 5 + [3] * 5


def test_pair_weights_records_a_proxy_for_every_partnered_weight(stories_export) -> None:
    cfg = AdpQConfig(rounding={"method": "paired"})
    model, plan = _selected(stories_export.path, cfg)
    PairWeightsPass(cfg, plan)(model)
    kinds = sorted({s.kind for s in plan.proxies.values()})
    assert len(plan.proxies) == 5 * 5  # v, o, gate, up, down of each layer; q, k round to nearest
    assert kinds == [
        "attention_output_input",
        "attention_value_output",
        "mlp_down_input",
        "mlp_gate_output",
        "mlp_up_output",
    ]
    model, plan = _selected(stories_export.path, AdpQConfig())
    PairWeightsPass(AdpQConfig(), plan)(model)
    assert plan.proxies == {}


def test_transforms_keep_the_float_function(stories_export, story_text, tmp_path) -> None:
    from adpq_onnx.models.evaluate import perplexity

    cfg = AdpQConfig(
        bits=3, group_size=64, transforms={"kinds": ("attn", "mlp", "norm"), "steps": 20}
    )
    model, plan = _selected(stories_export.path, cfg)
    LearnTransformsPass(cfg, plan)(model)
    assert len(plan.transforms) > 0
    out = tmp_path / "model.onnx"
    ir.save(model, out)
    res = perplexity(
        out,
        story_text,
        ctx=128,
        windows=2,
        reference=stories_export.path,
        tokenizer=stories_export.path.parent,
    )
    assert abs(res["perplexity_change"]) < 1e-5, res
    assert abs(res["kl"]) < 1e-6, res


@pytest.mark.requires_custom_ops
def test_paired_rounding_and_transforms_end_to_end(stories_export, story_text, tmp_path) -> None:
    """Through the custom op: runs, records its config, and at 3 bits is no worse than plain
    AdpQ (measured 2026-11-23 on all 9 windows of 256: 12.78 plain → 11.28 with both)."""
    from adpq_onnx.models.evaluate import perplexity
    from adpq_onnx.pipeline import optimize_file

    results = {}
    for name, extra in (
        ("plain", {}),
        (
            "both",
            {
                "rounding": {"method": "paired"},
                "transforms": {"kinds": ("attn", "mlp", "norm"), "steps": 30},
            },
        ),
    ):
        out = tmp_path / f"{name}.onnx"
        optimize_file(stories_export.path, out, AdpQConfig(bits=3, group_size=64, **extra))
        results[name] = perplexity(
            out,
            story_text,
            ctx=256,
            reference=stories_export.path,
            tokenizer=stories_export.path.parent,
        )
    assert results["both"]["perplexity"] < 1.02 * results["plain"]["perplexity"], results

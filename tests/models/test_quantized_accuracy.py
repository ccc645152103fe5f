"""A quantized real model stays close to the float one (stories260K, TinyStories text, ORT).

Bounds, measured on 2026-11-23 with the default AdpQConfig (4-bit, groups of 128 → one group
of 64 here since d = 64): 8-bit −0.1 % perplexity change, 4-bit +19 %, 3-bit +236 %.
stories260K is tiny (d = 64) and so far more sensitive than real LLMs; the bounds below leave
room for platform differences while catching a broken quantizer.
"""

from __future__ import annotations

import pytest

from adpq_onnx import AdpQConfig

# Relative perplexity change allowed per bit width.
MAX_PPL_CHANGE = {8: 0.01, 4: 0.30}
MAX_KL = {8: 0.005, 4: 0.30}

pytestmark = pytest.mark.requires_custom_ops


@pytest.mark.parametrize("bits", [8, 4])
def test_quantized_stories_within_bound(stories_export, story_text, tmp_path, bits):
    from adpq_onnx.models.evaluate import perplexity
    from adpq_onnx.pipeline import optimize_file

    out = tmp_path / f"q{bits}.onnx"
    optimize_file(stories_export.path, out, AdpQConfig(bits=bits))
    res = perplexity(
        out,
        story_text,
        ctx=256,
        reference=stories_export.path,
        tokenizer=stories_export.path.parent,
    )
    assert abs(res["perplexity_change"]) <= MAX_PPL_CHANGE[bits], res
    assert res["kl"] <= MAX_KL[bits], res

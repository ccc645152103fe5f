"""The demo, end to end on stories260K (SmolLM2 takes minutes; its numbers are in docs)."""

from __future__ import annotations

import importlib.util
import math
import shutil

import pytest

from adpq_onnx.models.demo import FLOAT_NAME, format_summary, run_demo

pytestmark = [
    pytest.mark.requires_custom_ops,
    pytest.mark.skipif(
        importlib.util.find_spec("adpq_onnx.passes") is None,
        reason="adpq_onnx.passes needs the installed package",
    ),
]


def test_demo_on_stories260k(stories_export, shared_data, tmp_path):
    # Reuse the session's export: the demo skips exporting when the folder has a model.
    for f in stories_export.path.parent.iterdir():
        shutil.copy(f, tmp_path / (FLOAT_NAME if f == stories_export.path else f.name))
    r = run_demo(tmp_path, bits=4, windows=2, ctx=64, source=str(shared_data / "stories260K.gguf"))
    assert r["size_adpq"] < r["size_float32"]
    assert math.isfinite(r["eval"]["perplexity"]) and r["eval"]["kl"] > 0
    assert r["answer_adpq"].strip()
    assert "perplexity" in format_summary(r)

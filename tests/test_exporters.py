"""Models as exporters write them, and graph shapes the selection must leave alone.

    legacy torch.onnx exporter (dynamo=False)   tied lm_head written as its own copy
    a real Llama (stories260K) through it       needs ../shared/data and gguf
    onnxruntime-genai's model builder           skipped unless onnxruntime_genai is importable
    If / Loop bodies, 3-D weights, shared weights: skipped or quantized once, end to end

docs/EXPORTERS.md records what was run and measured with each exporter.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

if importlib.util.find_spec("adpq_onnx.passes") is None:
    pytest.skip("adpq_onnx.passes exists only once installed", allow_module_level=True)

torch = pytest.importorskip("torch")

from adpq_onnx import pipeline  # noqa: E402
from adpq_onnx.config import AdpQConfig  # noqa: E402
from adpq_onnx.report import Report  # noqa: E402

VOCAB, HIDDEN = 96, 64


class TinyDecoder(torch.nn.Module):
    """Embedding tied to lm_head, two MLP blocks with bias-free Linears (Llama-like)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(VOCAB, HIDDEN)
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleDict(
                {
                    "norm": torch.nn.LayerNorm(HIDDEN),
                    "up": torch.nn.Linear(HIDDEN, 2 * HIDDEN, bias=False),
                    "down": torch.nn.Linear(2 * HIDDEN, HIDDEN, bias=True),
                }
            )
            for _ in range(2)
        )
        self.lm_head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
        self.lm_head.weight = self.embed.weight  # tied

    def forward(self, ids):  # type: ignore[no-untyped-def]
        h = self.embed(ids)
        for b in self.blocks:
            h = h + b["down"](torch.nn.functional.silu(b["up"](b["norm"](h))))
        return self.lm_head(h)


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def legacy_export(request, tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = TinyDecoder().eval()
    if request.param == "fp16":
        model = model.half()
    path = tmp_path_factory.mktemp("legacy") / "model.onnx"
    ids = torch.randint(0, VOCAB, (1, 5))
    torch.onnx.export(
        model,
        (ids,),
        str(path),
        dynamo=False,
        input_names=["input_ids"],
        output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "seq"}},
        opset_version=17,
    )
    return path


@pytest.mark.parametrize("quantize_embeddings", [False, True])
def test_legacy_torch_export_optimizes_and_runs(
    tmp_path, legacy_export, quantize_embeddings
) -> None:
    out = tmp_path / "q.onnx"
    config = AdpQConfig(
        bits=8,
        group_size=32,
        outlier_ratio=0.0,
        target="matmulnbits",
        quantize_embeddings=quantize_embeddings,
    )
    report = pipeline.optimize_file(legacy_export, out, config)
    nodes = {n for layer in report.layers for n in layer.nodes}
    # This exporter writes the tied lm_head as its own transposed copy of the table: the
    # graph no longer shows the tie, the data does.
    if quantize_embeddings:
        assert len(report.layers) == 5 and "/lm_head/MatMul" in nodes
    else:
        assert len(report.layers) == 4 and "/lm_head/MatMul" not in nodes
        assert [(s.node, s.reason) for s in report.skipped] == [
            ("/lm_head/MatMul", "tied to embedding embed.weight (by content)")
        ]
    result = pipeline.verify(legacy_export, out, config)
    assert result.outputs["logits"]["rel_error"] < 0.05
    assert np.isfinite(result.outputs["logits"]["max_abs"])


# --- a real Llama through the legacy exporter ---------------------------------------------


def _stories260k():  # type: ignore[no-untyped-def]
    """stories260K as a transformers model, or a skip saying what is missing."""
    folder = os.environ.get("ADPQ_SHARED_DATA")
    if folder is None or not (Path(folder) / "stories260K.gguf").is_file():
        pytest.skip("stories260K.gguf not found (../shared/data beside the checkout)")
    pytest.importorskip("gguf", reason="loading a GGUF file needs the gguf package")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file="stories260K.gguf", attn_implementation="eager"
    ).eval()


class _WithMask(torch.nn.Module):
    """logits = model(input_ids, attention_mask): an explicit 2-D mask keeps transformers 5's
    mask code off the path that calls ``torch.diff`` (``aten::diff`` has no ONNX symbolic
    at any opset), which it takes when no mask is given."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):  # type: ignore[no-untyped-def]
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).logits


@pytest.mark.slow
@pytest.mark.requires_custom_ops
def test_legacy_export_of_a_real_llama(tmp_path) -> None:
    import warnings

    from adpq_onnx import make_session

    model = _stories260k()
    path, out = tmp_path / "model.onnx", tmp_path / "q.onnx"
    ids = torch.randint(3, 512, (1, 8), generator=torch.Generator().manual_seed(0))
    dims = {0: "batch", 1: "seq"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation and trace warnings
        torch.onnx.export(
            _WithMask(model),
            (ids, torch.ones_like(ids)),
            str(path),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["logits"],
            dynamic_axes={"input_ids": dims, "attention_mask": dims},
            opset_version=17,
        )
    report = pipeline.optimize_file(path, out, AdpQConfig())
    # 5 layers × (q, k, v, o, gate, up, down); llama2.c ties the classifier to the embedding
    # and the GGUF keeps both copies, so lm_head is recognised by content.
    assert len(report.layers) == 35
    assert (
        "/model/lm_head/MatMul",
        "tied to embedding model.model.embed_tokens.weight (by content)",
    ) in [(s.node, s.reason) for s in report.skipped]
    ids = torch.randint(3, 512, (1, 24), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(input_ids=ids).logits.numpy().astype(np.float64)
    feeds = {"input_ids": ids.numpy(), "attention_mask": np.ones((1, 24), np.int64)}
    got = make_session(out).run(["logits"], feeds)[0].astype(np.float64)
    # Measured 0.065 for the default 4-bit config (docs/EXPORTERS.md).
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.15

"""Models as exporters write them: the legacy torch.onnx exporter (dynamo=False)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

if importlib.util.find_spec("adpq_onnx.passes") is None:
    pytest.skip("adpq_onnx.passes exists only once installed", allow_module_level=True)

torch = pytest.importorskip("torch")

from adpq_onnx import pipeline  # noqa: E402
from adpq_onnx.config import AdpQConfig  # noqa: E402

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


def test_legacy_torch_export_optimizes_and_runs(tmp_path, legacy_export) -> None:
    out = tmp_path / "q.onnx"
    config = AdpQConfig(bits=8, group_size=32, outlier_ratio=0.0, target="matmulnbits")
    report = pipeline.optimize_file(legacy_export, out, config)
    # 2 × (up, down) + lm_head: this exporter writes the tied lm_head as its own transposed
    # copy, so the graph no longer shows the tie and it is quantized like any Linear.
    assert len(report.layers) == 5
    assert {n for layer in report.layers for n in layer.nodes} >= {"/lm_head/MatMul"}
    result = pipeline.verify(legacy_export, out, config)
    assert result.outputs["logits"]["rel_error"] < 0.05
    assert np.isfinite(result.outputs["logits"]["max_abs"])

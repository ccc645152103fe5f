"""The AdpQ graph compiler: one visible list of passes, and the functions that run it.

    build_pipeline(config) -> onnx_ir.passes.PassManager
    optimize(model_or_path, config) -> onnx.ModelProto
    optimize_file(in_path, out_path, config) -> Report

Both entry points (Python API and CLI) go through `build_pipeline`; nothing else rewrites
the graph. The output model records the config (metadata key `adpq_onnx.config`) and a
summary of the run (`adpq_onnx.summary`).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import onnx
import onnx_ir as ir

from adpq_onnx import io
from adpq_onnx.config import METADATA_KEY, AdpQConfig
from adpq_onnx.errors import UserError
from adpq_onnx.passes import (
    CleanupPass,
    FoldTransposedWeightsPass,
    GemmToMatMulPass,
    QuantizeWeightsPass,
    QuantPlan,
    ReplaceMatMulWithAdpQPass,
    SelectMatMulsPass,
)
from adpq_onnx.report import SUMMARY_KEY, Report

logger = logging.getLogger(__name__)


def build_pipeline(config: AdpQConfig, plan: QuantPlan | None = None) -> ir.passes.PassManager:
    """The passes of one AdpQ run, in order; `plan` collects their decisions and stats."""
    _check_supported(config)
    plan = QuantPlan() if plan is None else plan
    return ir.passes.PassManager(
        [
            # Canonicalize first: selection only recognises MatMul(A, B[K, N] initializer).
            # Gemm goes before the fold so that its transposed weight is made in one step.
            GemmToMatMulPass(config, plan),
            FoldTransposedWeightsPass(config),
            # Analysis on the canonical graph, before anything is rewritten, so that each
            # weight's entry lists every MatMul that shares it.
            SelectMatMulsPass(config, plan),
            # Quantize once per weight; needs the complete list from the selection.
            QuantizeWeightsPass(config, plan),
            # Rewire only after every packed initializer exists.
            ReplaceMatMulWithAdpQPass(plan),
            # Last: the float weights and their Transpose / Cast die only once every
            # reader has been replaced.
            CleanupPass(),
        ],
        steps=1,
    )


def optimize(
    model_or_path: str | os.PathLike[str] | onnx.ModelProto | ir.Model,
    config: AdpQConfig | None = None,
    *,
    report: Report | None = None,
) -> onnx.ModelProto:
    """Quantize every eligible MatMul weight of a model with AdpQ.

    Args:
        model_or_path: A path (external data is read from beside it), a ModelProto or an
            onnx_ir Model. The caller's object is never modified.
        config: The options; `AdpQConfig()` when None.
        report: When given, filled in with the per-layer stats and the skipped nodes.

    Returns:
        The quantized model, with all tensor data inline.

    Raises:
        UserError: The model cannot be read, or has no MatMul to quantize.
    """
    config = AdpQConfig() if config is None else config
    _check_supported(config)
    model, source = _as_ir_model(model_or_path)
    run(model, config, source=source, report=report)
    ir.external_data.load_to_model(model)
    return ir.to_proto(model)


def optimize_file(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    config: AdpQConfig | None = None,
    report_path: str | os.PathLike[str] | None = None,
    *,
    external_data: bool | None = None,
) -> Report:
    """Quantize the model at `in_path` into `out_path` (and its ``.data`` when external).

    The output appears only once complete; the input is never written.
    `external_data=None` uses external data only above `io.EXTERNAL_DATA_THRESHOLD` bytes.
    """
    config = AdpQConfig() if config is None else config
    _check_supported(config)
    src, dst = Path(in_path), Path(out_path)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise UserError(f"{dst}: the output would overwrite the input")
    model = io.load_model(src)
    report = run(model, config, source=str(src))
    written = io.save_model(model, dst, external_data=external_data)
    if report_path is not None:
        io.atomic_write_text(report_path, json.dumps(report.to_dict(), indent=2) + "\n")
    logger.info("wrote %s", ", ".join(str(p) for p in written))
    return report


def run(
    model: ir.Model, config: AdpQConfig, *, source: str = "<model>", report: Report | None = None
) -> Report:
    """Run the pipeline on `model` in place and stamp its metadata; returns the report."""
    plan = QuantPlan()
    build_pipeline(config, plan)(model)
    report = Report() if report is None else report
    report.layers[:] = plan.layers()
    report.skipped[:] = plan.skipped
    report.config = config.to_dict()
    report.source = source
    if not report.layers:
        raise UserError(_nothing_eligible(source, report))
    model.metadata_props[METADATA_KEY] = config.to_json()
    model.metadata_props[SUMMARY_KEY] = json.dumps(report.totals(), sort_keys=True)
    return report


def _check_supported(config: AdpQConfig) -> None:
    if config.target == "matmulnbits":
        raise UserError("target matmulnbits is not implemented yet")


def _as_ir_model(
    model_or_path: str | os.PathLike[str] | onnx.ModelProto | ir.Model,
) -> tuple[ir.Model, str]:
    """A private onnx_ir model to rewrite, and a name for messages."""
    if isinstance(model_or_path, (str, os.PathLike)):
        return io.load_model(model_or_path), str(model_or_path)
    if isinstance(model_or_path, onnx.ModelProto):
        # deserialize_model builds new graph objects; the proto itself is only read.
        model = ir.serde.deserialize_model(model_or_path)
        return model, f"model '{model.graph.name}'"
    if isinstance(model_or_path, ir.Model):
        model = model_or_path.clone()
        return model, f"model '{model.graph.name}'"
    raise TypeError(f"expected a path, onnx.ModelProto or onnx_ir.Model, not {type(model_or_path)}")


def _nothing_eligible(source: str, report: Report) -> str:
    message = f"no MatMul with a constant 2-D float weight in {source} was quantized"
    if not report.skipped:
        return message + " (the graph has no MatMul or Gemm)"
    reasons = "; ".join(f"{s.node}: {s.reason}" for s in report.skipped[:3])
    more = f" (+{len(report.skipped) - 3} more)" if len(report.skipped) > 3 else ""
    return f"{message}: {reasons}{more}"

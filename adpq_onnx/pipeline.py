"""The AdpQ graph compiler: one visible list of passes, and the functions that run it.

    build_pipeline(config) -> onnx_ir.passes.PassManager
    optimize(model_or_path, config) -> onnx.ModelProto
    optimize_file(in_path, out_path, config) -> Report

Both entry points (Python API and CLI) go through `build_pipeline`; nothing else rewrites
the graph. The output model records the config (metadata key `adpq_onnx.config`) and a
summary of the run (`adpq_onnx.summary`).
"""

from __future__ import annotations

import dataclasses
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
    LearnTransformsPass,
    PairWeightsPass,
    QuantizeWeightsPass,
    QuantPlan,
    ReplaceMatMulWithAdpQPass,
    ReplaceMatMulWithMatMulNBitsPass,
    SelectMatMulsPass,
)
from adpq_onnx.passes.quantize_weights import Sink
from adpq_onnx.report import SUMMARY_KEY, Report

logger = logging.getLogger(__name__)


def build_pipeline(
    config: AdpQConfig,
    plan: QuantPlan | None = None,
    *,
    jobs: int = 1,
    sink: Sink | None = None,
    progress: bool = False,
) -> ir.passes.PassManager:
    """The passes of one AdpQ run, in order; `plan` collects their decisions and stats.

    `jobs`, `sink` and `progress` only change how weights are quantized (processes, where
    packed tensors are stored, a progress bar), never the result.
    """
    plan = QuantPlan() if plan is None else plan
    replace: ir.passes.InPlacePass = (
        ReplaceMatMulWithMatMulNBitsPass(plan, config.accuracy_level)
        if config.target == "matmulnbits"
        else ReplaceMatMulWithAdpQPass(plan, config.accuracy_level)
    )
    return ir.passes.PassManager(
        [
            # Canonicalize first: selection only recognises MatMul(A, B[K, N] initializer).
            # Gemm goes before the fold so that its transposed weight is made in one step.
            GemmToMatMulPass(config, plan),
            FoldTransposedWeightsPass(config),
            # Analysis on the canonical graph, before anything is rewritten, so that each
            # weight's entry lists every MatMul that shares it.
            SelectMatMulsPass(config, plan),
            # Optional (config.transforms): rewrite the selected float weights (and the gains
            # before them) by learned function-preserving transforms; needs the selection to
            # know each weight's bits, and must precede everything that reads weight values.
            LearnTransformsPass(config, plan),
            # Optional (config.rounding): which weights meet which in the graph, for rounding.
            PairWeightsPass(config, plan),
            # Quantize once per weight; needs the complete list from the selection.
            QuantizeWeightsPass(config, plan, jobs=jobs, sink=sink, progress=progress),
            # Rewire only after every packed initializer exists; config.target picks the op.
            replace,
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
    jobs: int = 1,
    progress: bool = False,
) -> Report:
    """Quantize the model at `in_path` into `out_path` (and its ``.data`` when external).

    The output appears only once complete; the input is never written. With external data
    each packed tensor is written to the data file as soon as it exists, and input weights are
    read one at a time, so memory stays near the largest weight rather than the model.
    `external_data=None` uses external data when the input's tensors exceed
    `io.EXTERNAL_DATA_THRESHOLD` bytes or the input already keeps them in a data file.
    """
    config = AdpQConfig() if config is None else config
    src, dst = Path(in_path), Path(out_path)
    if dst.exists() and src.exists() and dst.resolve() == src.resolve():
        raise UserError(f"{dst}: the output would overwrite the input")
    model = io.load_model(src)
    if external_data is None:
        external_data = io.tensor_bytes(model) > io.EXTERNAL_DATA_THRESHOLD or io.uses_external(
            model
        )
    with io.ModelWriter(dst, external_data) as out:
        sink = None if out.writer is None else out.writer.store
        report = run(model, config, source=str(src), jobs=jobs, sink=sink, progress=progress)
        written = out.commit(model)
    if report_path is not None:
        io.atomic_write_text(report_path, json.dumps(report.to_dict(), indent=2) + "\n")
    logger.info("wrote %s", ", ".join(str(p) for p in written))
    return report


def run(
    model: ir.Model,
    config: AdpQConfig,
    *,
    source: str = "<model>",
    report: Report | None = None,
    jobs: int = 1,
    sink: Sink | None = None,
    progress: bool = False,
) -> Report:
    """Run the pipeline on `model` in place and stamp its metadata; returns the report.

    Raises:
        UserError: The opset is not supported, a weight holds NaN / Inf, or nothing was
            eligible for quantization.
    """
    _check_opset(model, source)
    plan = QuantPlan()
    build_pipeline(config, plan, jobs=jobs, sink=sink, progress=progress)(model)
    if plan.rejected:
        bad = [s for s in plan.skipped if s.weight in plan.rejected]
        raise UserError(
            f"{source}: weight '{bad[0].weight}' (node '{bad[0].node}') cannot be quantized: "
            f"{bad[0].reason.removeprefix('weight rejected: ')}"
            + (f" (+{len(plan.rejected) - 1} more weight(s))" if len(plan.rejected) > 1 else "")
        )
    report = Report() if report is None else report
    report.layers[:] = plan.layers()
    report.skipped[:] = plan.skipped
    report.transforms[:] = plan.transforms
    report.paired[:] = [name for name in plan.proxies if name in plan.weights]
    report.config = config.to_dict()
    report.source = source
    if not report.layers:
        raise UserError(_nothing_eligible(source, report))
    model.metadata_props[METADATA_KEY] = config.to_json()
    model.metadata_props[SUMMARY_KEY] = json.dumps(report.totals(), sort_keys=True)
    return report


# Default-domain opsets whose MatMul / Gemm / Transpose / Cast semantics the passes know.
MIN_OPSET = 7


def _check_opset(model: ir.Model, source: str) -> None:
    version = model.opset_imports.get("", model.opset_imports.get("ai.onnx"))
    newest = onnx.defs.onnx_opset_version()
    if version is not None and not MIN_OPSET <= version <= newest:
        raise UserError(
            f"{source}: opset {version} of the default ONNX domain is not supported "
            f"(supported: {MIN_OPSET} to {newest})"
        )


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


@dataclasses.dataclass
class Verification:
    """Outputs of the quantized model against the input model's, on the same random inputs."""

    outputs: dict[str, dict[str, float]]

    def summary(self) -> str:
        lines = ["verify: ONNX checker passed; ORT ran both models"]
        for name, err in self.outputs.items():
            lines.append(
                f"  {name}: relative error {err['rel_error']:.4g}, max abs {err['max_abs']:.4g}"
            )
        return "\n".join(lines)


def verify(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    config: AdpQConfig | None = None,
    *,
    seed: int = 0,
) -> Verification:
    """Check `out_path` with the ONNX checker and ORT, and compare its float outputs with
    `in_path`'s on random inputs (symbolic dims 2, ``past*`` dims 0, integer inputs in [0, 16),
    ``*mask*`` inputs 1).

    Raises:
        UserError: the checker or ORT rejects the result, or an output is not finite.
    """
    import numpy as np
    import onnxruntime as ort

    from adpq_onnx.ops import library

    try:
        onnx.checker.check_model(str(out_path))
    except onnx.checker.ValidationError as exc:
        raise UserError(f"{out_path}: the ONNX checker rejects the result: {exc}") from None
    target = (config or AdpQConfig()).target
    ref = ort.InferenceSession(str(in_path), providers=["CPUExecutionProvider"])
    try:
        if target == "adpq":
            got = library.make_session(out_path)
        else:
            got = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
    except library.LibraryNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise UserError(f"{out_path}: ONNX Runtime cannot load the result: {exc}") from None
    rng = np.random.default_rng(seed)
    feeds = {i.name: _random_input(i, rng) for i in ref.get_inputs()}
    names = [o.name for o in ref.get_outputs()]
    errors = {}
    for name, a, b in zip(names, ref.run(names, feeds), got.run(names, feeds), strict=True):
        if not np.issubdtype(np.asarray(a).dtype, np.floating):
            continue
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if not np.isfinite(b).all():
            raise UserError(f"{out_path}: output '{name}' is not finite")
        norm = float(np.linalg.norm(a))
        diff = float(np.linalg.norm(a - b))
        errors[name] = {
            "rel_error": diff / norm if norm else diff,
            "max_abs": float(np.abs(a - b).max()) if a.size else 0.0,
        }
    return Verification(errors)


def _random_input(info, rng):  # type: ignore[no-untyped-def]
    import numpy as np

    shape = [
        d if isinstance(d, int) else (0 if "past" in str(d).lower() else 2) for d in info.shape
    ]
    dtype = {
        "tensor(float)": np.float32,
        "tensor(float16)": np.float16,
        "tensor(int64)": np.int64,
        "tensor(int32)": np.int32,
        "tensor(bool)": np.bool_,
    }.get(info.type)
    if dtype is None:
        raise UserError(f"--verify: input '{info.name}' has unsupported type {info.type}")
    if "mask" in info.name.lower():
        return np.ones(shape, dtype)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, 16, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)

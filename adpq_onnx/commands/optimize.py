"""`adpq-onnx optimize IN.onnx -o OUT.onnx [options]`: quantize a model's MatMul weights.

Options left out keep `AdpQConfig`'s defaults, and every value is validated by `AdpQConfig`
itself, so a bad value is a `ConfigError` (exit status 2, no output file) with one wording
whether it came from the CLI or the Python API.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import typing
from pathlib import Path

from adpq_onnx import config as _config
from adpq_onnx.config import AdpQConfig
from adpq_onnx.errors import UserError


def _choices(literal: object) -> str:
    return "{" + ",".join(typing.get_args(literal)) + "}"


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    default = AdpQConfig()
    p = subparsers.add_parser(
        "optimize",
        help="quantize the MatMul weights of an ONNX model with AdpQ",
        description="Replace every MatMul (and Gemm) with a constant float weight by an "
        "AdpQMatMul on packed low-bit weights, and print a per-layer summary.",
    )
    p.add_argument("input", metavar="IN.onnx", help="the float model")
    p.add_argument("-o", "--output", metavar="OUT.onnx", help="default: IN.adpq.onnx beside IN")
    p.add_argument("--bits", type=int, metavar="{2,3,4,8}", help=f"default {default.bits}")
    p.add_argument("--group-size", type=int, metavar="G", help=f"default {default.group_size}")
    p.add_argument(
        "--outlier-ratio", type=float, metavar="ALPHA", help=f"default {default.outlier_ratio}"
    )
    p.add_argument("--gamma", type=float, metavar="G", help=f"default {default.gamma}")
    p.add_argument("--lasso-scope", metavar=_choices(_config.Scope))
    p.add_argument("--outlier-mode", metavar=_choices(_config.OutlierMode))
    p.add_argument("--outlier-dtype", metavar=_choices(_config.OutlierDtype))
    p.add_argument("--range-search", type=int, metavar="N", help="grid shrink candidates")
    p.add_argument(
        "--rounding",
        dest="rounding_method",
        metavar=_choices(_config.RoundingMethod),
        help="paired: error-feedback rounding against a proxy built from the weights each "
        "layer meets (attention value/output, SwiGLU); default nearest",
    )
    p.add_argument(
        "--transforms",
        dest="transform_kinds",
        metavar="KIND[,KIND]",
        help="learned function-preserving transforms folded into the weights before "
        "quantization: attn, mlp, norm (comma-separated); default none",
    )
    p.add_argument("--transform-steps", type=int, metavar="N", help="optimizer steps per transform")
    p.add_argument(
        "--transform-objective",
        metavar=_choices(_config.TransformObjective),
        help="what attn/mlp transforms minimize; default weights",
    )
    p.add_argument(
        "--accuracy-level",
        type=int,
        metavar="{0,4}",
        help="4: int8 activations in the CPU kernel (faster, slightly less exact); default 0",
    )
    p.add_argument("--include", metavar="REGEX", help="only weights/nodes matching")
    p.add_argument("--exclude", metavar="REGEX", help="leave weights/nodes matching")
    p.add_argument("--min-size", type=int, metavar="ELEMENTS", help="leave smaller weights")
    p.add_argument("--target", metavar=_choices(_config.Target))
    p.add_argument(
        "--quantize-embeddings",
        action="store_true",
        default=None,
        help="also quantize MatMuls whose weight a Gather shares (tied lm_head)",
    )
    p.add_argument(
        "--external-data",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="store tensors in OUT.onnx.data (default: only above 1.8 GB)",
    )
    p.add_argument(
        "--rule",
        action="append",
        dest="rules",
        metavar="REGEX:key=value,...",
        help="per-layer bits/group_size/outlier_ratio for weights matching REGEX (first wins; "
        "repeatable), e.g. 'down_proj:bits=8,group_size=64'",
    )
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="quantize in N processes")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    p.add_argument("--report", metavar="REPORT.json", help="write the per-layer report")
    p.add_argument("--plots", metavar="DIR", help="write PNG plots (histograms, error per layer)")
    p.add_argument(
        "--verify",
        action="store_true",
        help="check the result with the ONNX checker and ORT and compare its outputs with the "
        "input model's on random inputs",
    )
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> AdpQConfig:
    """The config made of the options given; raises ConfigError for a bad value."""
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(AdpQConfig)
        if getattr(args, f.name, None) is not None
    }
    if "rules" in given:
        given["rules"] = tuple(_config.Rule.parse(text) for text in given["rules"])
    if getattr(args, "rounding_method", None) is not None:
        given["rounding"] = _config.RoundingConfig(method=args.rounding_method)
    transforms: dict[str, object] = {}
    if getattr(args, "transform_kinds", None):
        transforms["kinds"] = tuple(k.strip() for k in args.transform_kinds.split(",") if k)
    if getattr(args, "transform_steps", None) is not None:
        transforms["steps"] = args.transform_steps
    if getattr(args, "transform_objective", None) is not None:
        transforms["objective"] = args.transform_objective
    if transforms:
        given["transforms"] = _config.TransformConfig(**transforms)  # type: ignore[arg-type]
    return AdpQConfig(**given)


def default_output(input_path: str) -> Path:
    p = Path(input_path)
    return p.with_name(f"{p.stem}.adpq.onnx")


def run(args: argparse.Namespace) -> int:
    from adpq_onnx.pipeline import optimize_file

    if not getattr(args, "verbose", False):
        # onnx_ir reports each cleanup step at INFO; the summary below says what matters.
        logging.getLogger("onnx_ir").setLevel(logging.WARNING)
    config = config_from_args(args)
    if args.jobs < 1:
        raise UserError(f"--jobs={args.jobs} must be at least 1")
    out = Path(args.output) if args.output else default_output(args.input)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    report = optimize_file(
        args.input,
        out,
        config,
        report_path=args.report,
        external_data=args.external_data,
        jobs=args.jobs,
        progress=progress,
    )
    print(report.summary())
    print(f"wrote {out}")
    if args.plots:
        from adpq_onnx.plots import write_plots

        for path in write_plots(report, args.plots):
            print(f"wrote {path}")
    if args.verify:
        from adpq_onnx.pipeline import verify

        print(verify(args.input, out, config).summary())
    return 0

"""`adpq-onnx demo`: fetch SmolLM2-135M-Instruct from PyPI, export, quantize, evaluate, sample.

See `adpq_onnx.models.demo` for the steps. With the defaults it takes a few minutes on
2 CPU cores (most of it the first export, which later runs reuse).
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from adpq_onnx.models.demo import DEFAULT_CTX, DEFAULT_WINDOWS

    p = subparsers.add_parser(
        "demo",
        help="SmolLM2-135M end to end: export, AdpQ-quantize, perplexity, generation",
        description="Export SmolLM2-135M-Instruct (from PyPI, cached) to float32 ONNX, "
        "quantize it with AdpQ, and compare perplexity, KL, size and a greedy answer.",
    )
    p.add_argument("--workdir", metavar="DIR", help="default: ~/.cache/adpq-onnx/demo/smollm2")
    p.add_argument("--bits", type=int, default=4, help="AdpQ bits (default 4)")
    p.add_argument("--group-size", type=int, metavar="G", help="default: AdpQConfig's")
    p.add_argument(
        "--windows", type=int, default=DEFAULT_WINDOWS, help=f"default {DEFAULT_WINDOWS}"
    )
    p.add_argument("--ctx", type=int, default=DEFAULT_CTX, help=f"default {DEFAULT_CTX}")
    p.add_argument("--source", default="smollm2", help="export SOURCE (default smollm2)")
    p.add_argument("--reexport", action="store_true", help="export even if DIR has a model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adpq_onnx.models.demo import format_summary, run_demo

    def say(message: str) -> None:
        print(f"[demo] {message}", flush=True)

    result = run_demo(
        args.workdir,
        bits=args.bits,
        windows=args.windows,
        ctx=args.ctx,
        group_size=args.group_size,
        source=args.source,
        reexport=args.reexport,
        say=say,
    )
    print(format_summary(result))
    return 0

"""`adpq-onnx`: a thin shell over the Python API.

Each sub-command lives in `adpq_onnx/commands/<name>.py` with two functions:
`add_parser(subparsers)` (which sets `func=run` on its parser) and `run(args) -> int`.
Command modules import heavy packages (torch, transformers, onnxruntime) inside `run` only.
Errors meant for users are raised as `adpq_onnx.errors.UserError` and printed without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from adpq_onnx import __version__
from adpq_onnx.errors import UserError

COMMANDS = ("export", "optimize", "inspect", "eval", "generate", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adpq-onnx",
        description="Calibration-free AdpQ low-bit weight quantization of ONNX LLMs.",
    )
    parser.add_argument("--version", action="version", version=f"adpq-onnx {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"adpq_onnx.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"adpq_onnx.commands.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s: %(message)s"
    )
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"adpq-onnx {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

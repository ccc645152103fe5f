"""`adpq-onnx generate MODEL.onnx --prompt TEXT`: greedy decoding with the KV cache."""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "generate",
        help="greedy text generation with an exported model",
        description="Prefill the prompt, then decode one token at a time with the KV cache.",
    )
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-new-tokens", type=int, default=32, metavar="N")
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer folder (default: MODEL's)")
    p.add_argument(
        "--chat", action="store_true", help="apply the tokenizer's chat template (instruct models)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adpq_onnx.errors import UserError
    from adpq_onnx.models.generate import generate

    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens {args.max_new_tokens}: must be at least 1")
    text = generate(
        args.model, args.prompt, args.max_new_tokens, tokenizer=args.tokenizer, chat=args.chat
    )
    # A plain prompt is continued, so print it with its continuation; a chat reply stands alone.
    print(text if args.chat else args.prompt + text)
    return 0

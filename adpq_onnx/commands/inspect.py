"""`adpq-onnx inspect MODEL.onnx [--json]`: what an AdpQ model holds, from the file itself.

Sizes come from the initializers' shapes and dtypes, so external data is never read and a
multi-GB model is inspected in a moment. Packed tensors shared by several nodes (a shared
weight) count once in the totals.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from adpq_onnx.report import format_bytes, format_table

# Bits of the element types that numpy cannot size (packed 4-bit types).
_SUB_BYTE_BITS = {"INT4": 4, "UINT4": 4, "FLOAT4E2M1": 4}


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "inspect",
        help="list the AdpQ nodes, sizes and recorded config of a model",
        description="List every AdpQMatMul (K, N, bits, block size, outliers, bits per weight "
        "from the stored tensors), the model's sizes and the config it was made with.",
    )
    p.add_argument("model", metavar="MODEL.onnx")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from adpq_onnx import io

    info = describe(io.load_proto(args.model), args.model)
    print(json.dumps(info, indent=2) if args.json else render(info))
    return 0


def _tensor_bytes(tensor: Any) -> int:
    import onnx

    count = math.prod(tensor.dims)
    name = onnx.TensorProto.DataType.Name(tensor.data_type)
    if name in _SUB_BYTE_BITS:
        return -(-count * _SUB_BYTE_BITS[name] // 8)
    try:
        itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    except (KeyError, TypeError, ValueError):
        return 0
    return int(count * itemsize)


def describe(proto: Any, path: str) -> dict[str, Any]:
    """JSON-able inventory of a ModelProto: AdpQ nodes, sizes and metadata."""
    from adpq_onnx.config import METADATA_KEY
    from adpq_onnx.ops import spec
    from adpq_onnx.report import SUMMARY_KEY

    sizes = {t.name: _tensor_bytes(t) for t in proto.graph.initializer}
    dims = {t.name: list(t.dims) for t in proto.graph.initializer}
    nodes, packed = [], set()
    for node in proto.graph.node:
        if node.domain != spec.DOMAIN or node.op_type != spec.OP_TYPE:
            continue
        attrs = {a.name: a.i for a in node.attribute}
        names = [n for i, n in enumerate(node.input) if i > 0 and n and spec.INPUTS[i] != "bias"]
        nbytes = sum(sizes.get(n, 0) for n in names)
        packed.update(names)
        k, n = attrs.get("K", 0), attrs.get("N", 0)
        idx = node.input[spec.INPUTS.index("outlier_idx")]
        nodes.append(
            {
                "name": node.name,
                "K": k,
                "N": n,
                "bits": attrs.get("bits"),
                "block_size": attrs.get("block_size"),
                "outliers": (dims.get(idx) or [0])[0],
                "packed_bytes": nbytes,
                "bits_per_weight": nbytes * 8 / (k * n) if k and n else 0.0,
            }
        )
    packed_bytes = sum(sizes.get(n, 0) for n in packed)
    total = sum(sizes.values())
    meta = {p.key: p.value for p in proto.metadata_props}
    return {
        "model": path,
        "nodes": nodes,
        "totals": {
            "adpq_nodes": len(nodes),
            "packed_bytes": packed_bytes,
            "other_initializer_bytes": total - packed_bytes,
            "initializer_bytes": total,
        },
        "config": json.loads(meta[METADATA_KEY]) if METADATA_KEY in meta else None,
        "summary": json.loads(meta[SUMMARY_KEY]) if SUMMARY_KEY in meta else None,
    }


def render(info: dict[str, Any]) -> str:
    """The inventory as a plain-text table."""
    header = ("node", "K", "N", "bits", "block", "outliers", "bpw")
    rows = [
        (
            n["name"],
            str(n["K"]),
            str(n["N"]),
            str(n["bits"]),
            str(n["block_size"]),
            str(n["outliers"]),
            f"{n['bits_per_weight']:.3f}",
        )
        for n in info["nodes"]
    ]
    lines = [f"{info['model']}: {len(rows)} AdpQMatMul node(s)", *format_table(header, rows)]
    t = info["totals"]
    lines.append("")
    packed, other = format_bytes(t["packed_bytes"]), format_bytes(t["other_initializer_bytes"])
    total = format_bytes(t["initializer_bytes"])
    lines.append(f"packed weights {packed}, other initializers {other}, total {total}")
    config = info["config"]
    lines.append("config: " + (json.dumps(config, sort_keys=True) if config else "(none recorded)"))
    return "\n".join(lines)

"""What a quantization run did, as JSON-able records and a plain-text table.

`LayerReport` describes one quantized weight (shared by every node that reads it),
`SkippedNode` one node left alone and why, and `Report` the whole run with its totals.
The graph passes fill these in; `optimize` returns them to the caller; the CLI prints
`Report.summary()` and writes `Report.to_dict()` as JSON. No ONNX here: plain data only.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

# Metadata key of the run's totals in the output model (next to adpq_onnx.config.METADATA_KEY).
SUMMARY_KEY = "adpq_onnx.summary"


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """One quantized weight.

    Attributes:
        name: The initializer's name (B[K, N] of the MatMuls).
        nodes: Names of the nodes that read it (several when the weight is shared).
        K: Input features.
        N: Output features.
        bits: Bits per inlier code.
        group_size: Weights along K sharing a scale and zero point.
        nnz: Number of outliers stored apart.
        outlier_fraction: nnz / (K·N).
        bits_per_weight: Every stored bit (codes, scales, zero points, outliers) over K·N.
        weight_rel_error: ‖B̂ − B‖_F / ‖B‖_F of the dequantized weight.
        seconds: Time spent quantizing and packing it.
        original_bytes: Bytes of the original initializer.
        packed_bytes: Bytes of its packed tensors.
        adpq_rel_error: The error AdpQ gets with its sparse outliers; larger than
            `weight_rel_error` by the cost of folding them when the target has no room for
            outliers (MatMulNBits), else equal.
        threshold: The smallest |w| kept as an outlier (the LASSO cut), None without outliers.
        histogram: (bin edges, counts) of the weight's values, for the plots.
    """

    name: str
    nodes: tuple[str, ...]
    K: int
    N: int
    bits: int
    group_size: int
    nnz: int
    outlier_fraction: float
    bits_per_weight: float
    weight_rel_error: float
    seconds: float
    original_bytes: int
    packed_bytes: int
    adpq_rel_error: float | None = None
    threshold: float | None = None
    histogram: tuple[list[float], list[int]] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {**dataclasses.asdict(self), "nodes": list(self.nodes)}
        if self.histogram is not None:
            data["histogram"] = {"edges": self.histogram[0], "counts": self.histogram[1]}
        return data


@dataclasses.dataclass(frozen=True)
class SkippedNode:
    """A node the pipeline left alone: `reason` says why in words a user can act on."""

    node: str
    op_type: str
    weight: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Report:
    """The record of one `optimize` run; filled in by the pipeline."""

    layers: list[LayerReport] = dataclasses.field(default_factory=list)
    skipped: list[SkippedNode] = dataclasses.field(default_factory=list)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str | None = None
    transforms: list[str] = dataclasses.field(default_factory=list)
    paired: list[str] = dataclasses.field(default_factory=list)  # weights rounded by a proxy

    def totals(self) -> dict[str, Any]:
        """Counts and sizes over all quantized weights."""
        original = sum(layer.original_bytes for layer in self.layers)
        packed = sum(layer.packed_bytes for layer in self.layers)
        weights = sum(layer.K * layer.N for layer in self.layers)
        return {
            "weights_quantized": len(self.layers),
            "nodes_replaced": sum(len(layer.nodes) for layer in self.layers),
            "nodes_skipped": len(self.skipped),
            "parameters": weights,
            "original_bytes": original,
            "packed_bytes": packed,
            "bits_per_weight": packed * 8 / weights if weights else 0.0,
            "compression": original / packed if packed else 0.0,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "config": self.config,
            "totals": self.totals(),
            "layers": [layer.to_dict() for layer in self.layers],
            "skipped": [skip.to_dict() for skip in self.skipped],
            "transforms": list(self.transforms),
            "paired_rounding": list(self.paired),
        }

    def write_json(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2)
            f.write("\n")

    def summary(self) -> str:
        """A plain-text table of the layers, the skipped nodes and the totals."""
        rows = [
            (
                layer.name,
                f"{layer.K}x{layer.N}",
                f"{layer.bits}/{layer.group_size}",
                f"{100 * layer.outlier_fraction:.2f}",
                f"{layer.bits_per_weight:.3f}",
                f"{layer.weight_rel_error:.4f}",
                f"{layer.seconds:.2f}",
            )
            for layer in self.layers
        ]
        header = ("weight", "KxN", "bits/G", "outl%", "bpw", "rel.err", "s")
        lines = format_table(header, rows)
        if self.skipped:
            lines.append("")
            lines.append(f"skipped {len(self.skipped)} node(s):")
            lines.extend(f"  {s.node} ({s.op_type}): {s.reason}" for s in self.skipped)
        if self.transforms:
            lines.append("")
            lines.append(f"folded {len(self.transforms)} learned transform(s)")
        if self.paired:
            lines.append(f"rounded {len(self.paired)} weight(s) against a paired-weight proxy")
        t = self.totals()
        lines.append("")
        lines.append(
            f"{t['weights_quantized']} weight(s) in {t['nodes_replaced']} node(s): "
            f"{format_bytes(t['original_bytes'])} -> {format_bytes(t['packed_bytes'])}, "
            f"{t['bits_per_weight']:.3f} bits per weight"
        )
        return "\n".join(lines)


def format_table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Left-aligned first column, right-aligned numbers, two spaces between columns."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: tuple[str, ...]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first, *rest]).rstrip()

    return [line(header), *(line(r) for r in rows)]


def format_bytes(n: int) -> str:
    """1536 -> '1.5 KiB'."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")

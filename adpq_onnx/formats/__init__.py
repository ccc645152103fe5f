"""Packed layouts: bits and bytes, no graphs. Each module's pack/unpack is the spec."""

from __future__ import annotations

import dataclasses

from adpq_onnx.formats import bitpack
from adpq_onnx.formats.packed import PackedWeight, pack, unpack, validate


@dataclasses.dataclass(frozen=True)
class FormatSpec:
    """One code width of the AdpQ packed layout."""

    name: str
    bits: int
    planes: tuple[int, ...]
    block_bytes: int  # bytes per block of 32 codes


FORMATS: dict[str, FormatSpec] = {
    f"adpq_b{b}": FormatSpec(f"adpq_b{b}", b, bitpack.PLANES[b], bitpack.block_bytes(b))
    for b in sorted(bitpack.PLANES)
}

__all__ = ["FORMATS", "FormatSpec", "PackedWeight", "pack", "unpack", "validate"]

"""Bit packing of b-bit codes in blocks of 32, as bit planes (the spec; see docs/FORMAT.md).

A row of K codes is padded with zero codes to K_pad = ceil(K / 32) · 32 and cut into blocks of
32 codes. A block of b-bit codes takes 4·b bytes, made of planes:

    bits  planes (low bits first)   bytes per block
    2     [2]                        8
    3     [2, 1]                     8 + 4 = 12
    4     [4]                        16
    8     [8]                        32

A p-bit plane holds the p bits of each code that it covers (bits `shift .. shift+p-1` of the
code, `shift` being the sum of the earlier planes' widths) in 4·p bytes. Byte j of the plane
holds the codes j + s·(4p) for s = 0 .. 8/p − 1, at bit offset s·p:

    p = 4:  byte j = c[j]      | c[j+16] << 4                        (j < 16)
    p = 2:  byte j = c[j]      | c[j+8]  << 2 | c[j+16] << 4 | c[j+24] << 6   (j < 8)
    p = 1:  byte j = Σ_s c[j+4s] << s                                (j < 4)
    p = 8:  byte j = c[j]

so one shift-and-mask of a plane yields a run of 4·p consecutive codes: a SIMD unpack needs
no shuffles. Blocks follow each other along K; rows follow each other.
"""

from __future__ import annotations

import numpy as np

PLANES: dict[int, tuple[int, ...]] = {2: (2,), 3: (2, 1), 4: (4,), 8: (8,)}
BLOCK = 32


def block_bytes(bits: int) -> int:
    """Bytes of one block of 32 codes."""
    return 4 * bits


def packed_row_bytes(k: int, bits: int) -> int:
    """Bytes of one packed row of K codes (padded to a multiple of 32 codes)."""
    return -(-k // BLOCK) * block_bytes(bits)


def _pack_plane(vals: np.ndarray, p: int) -> np.ndarray:
    """vals uint8 [..., 32] (each < 2^p) → uint8 [..., 4p]."""
    run = 4 * p
    per_byte = 8 // p
    out = np.zeros(vals.shape[:-1] + (run,), dtype=np.uint8)
    for s in range(per_byte):
        out |= (vals[..., s * run : (s + 1) * run] << (s * p)).astype(np.uint8)
    return out


def _unpack_plane(plane: np.ndarray, p: int) -> np.ndarray:
    """uint8 [..., 4p] → uint8 [..., 32]."""
    per_byte = 8 // p
    mask = (1 << p) - 1
    return np.concatenate([(plane >> (s * p)) & mask for s in range(per_byte)], axis=-1)


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """uint8 codes [N, K] (each < 2^bits) → packed uint8 [N, packed_row_bytes(K, bits)]."""
    if bits not in PLANES:
        raise ValueError(f"bits={bits} has no packed layout; choose one of {sorted(PLANES)}")
    codes = np.asarray(codes, dtype=np.uint8)
    if codes.ndim != 2:
        raise ValueError(f"expected codes [N, K], got shape {codes.shape}")
    if codes.size and int(codes.max()) >> bits:
        raise ValueError(f"a code does not fit in {bits} bits")
    n, k = codes.shape
    k_pad = -(-k // BLOCK) * BLOCK
    padded = np.zeros((n, k_pad), dtype=np.uint8)
    padded[:, :k] = codes
    blocks = padded.reshape(n, k_pad // BLOCK, BLOCK)
    parts = []
    shift = 0
    for p in PLANES[bits]:
        parts.append(_pack_plane((blocks >> shift) & ((1 << p) - 1), p))
        shift += p
    return np.concatenate(parts, axis=-1).reshape(n, -1)


def unpack_codes(packed: np.ndarray, k: int, bits: int) -> np.ndarray:
    """Inverse of `pack_codes`: packed uint8 [N, row_bytes] → codes uint8 [N, K]."""
    if bits not in PLANES:
        raise ValueError(f"bits={bits} has no packed layout; choose one of {sorted(PLANES)}")
    n = packed.shape[0]
    row_bytes = packed_row_bytes(k, bits)
    if packed.shape != (n, row_bytes):
        raise ValueError(f"packed codes of shape {packed.shape} do not hold K={k} at {bits} bits")
    blocks = packed.reshape(n, -1, block_bytes(bits))
    codes = np.zeros(blocks.shape[:-1] + (BLOCK,), dtype=np.uint8)
    offset = 0
    shift = 0
    for p in PLANES[bits]:
        codes |= _unpack_plane(blocks[..., offset : offset + 4 * p], p) << shift
        offset += 4 * p
        shift += p
    return codes.reshape(n, -1)[:, :k]

"""Bit packing of b-bit codes in blocks of 32 (the spec; see docs/FORMAT.md).

A row of K codes is padded with zero codes to K_pad = ceil(K / 32) · 32 and cut into blocks of
32 codes. A block of b-bit codes takes 4·b bytes, made of planes:

    bits  planes (low bits first)   bytes per block
    2     [2]                        8
    3     [2, 1]                     8 + 4 = 12
    4     [4]                        16
    8     [8]                        32

A p-bit plane of a run of R codes (bits `shift .. shift+p-1` of each code, `shift` being the
sum of the earlier planes' widths) takes R·p/8 bytes; for p ≥ 2 byte j holds the codes
j + s·(R·p/8) for s = 0 .. 8/p − 1 at bit offset s·p:

    p = 4:  byte j = c[j]      | c[j+16] << 4                        (R = 32, j < 16)
    p = 2:  byte j = c[j]      | c[j+8]  << 2 | c[j+16] << 4 | c[j+24] << 6   (R = 32, j < 8)
    p = 8:  byte j = c[j]

so one shift-and-mask of a plane yields a run of R·p/8 consecutive codes: a SIMD unpack needs
no shuffles. 2-, 4- and 8-bit blocks are one plane each (R = 32) and follow each other along
K.

3 bits are stored in *units* of two blocks (blocks 2i and 2i + 1, 64 codes, 24 bytes); when a
row has an odd number of blocks its last block is a unit of its own (32 codes, 12 bytes), so a
row still takes ceil(K / 32) · 12 bytes and block b's unit starts at byte 12 · (b − b mod 2).
A unit of R codes holds its 2-bit plane (R/4 bytes, the p = 2 rule above with run R: for R = 64
byte j holds codes j, j+16, j+32, j+48) and then its 1-bit plane (bit 2 of each code) in R/8
bytes, in natural bit order: bit c of the little-endian R-bit word is bit 2 of code c.

    unit of 64:  [16 bytes: 2-bit plane][8 bytes: bit c = bit 2 of code c]
    last unit of 32 (odd block count): [8 bytes: 2-bit plane][4 bytes: bit c = bit 2 of c]

Why units: an AVX-512 core unpacks 64 3-bit codes with one 16-byte broadcast load, one
variable shift and one mask (the 2-bit plane lands in natural order in the four 128-bit
lanes), plus a 64-bit mask-register load and one masked byte add of 4 (the 1-bit plane), about
half the vector operations of block-sized planes, and the GPU still reads any block alone.
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
    """vals uint8 [..., R] (each < 2^p, p ≥ 2) → uint8 [..., R·p/8]: byte j holds codes
    j + s·(R·p/8) at bit s·p."""
    run = vals.shape[-1] * p // 8
    per_byte = 8 // p
    out = np.zeros(vals.shape[:-1] + (run,), dtype=np.uint8)
    for s in range(per_byte):
        out |= (vals[..., s * run : (s + 1) * run] << (s * p)).astype(np.uint8)
    return out


def _unpack_plane(plane: np.ndarray, p: int) -> np.ndarray:
    """uint8 [..., R·p/8] → uint8 [..., R] (inverse of `_pack_plane`)."""
    per_byte = 8 // p
    mask = (1 << p) - 1
    return np.concatenate([(plane >> (s * p)) & mask for s in range(per_byte)], axis=-1)


def _pack_bits(vals: np.ndarray) -> np.ndarray:
    """vals uint8 [..., R] (each 0 or 1) → uint8 [..., R/8]: bit c of the little-endian word
    is vals[c]."""
    return np.packbits(vals, axis=-1, bitorder="little")


def _unpack_bits(plane: np.ndarray) -> np.ndarray:
    return np.unpackbits(plane, axis=-1, bitorder="little")


def _pack_unit3(codes: np.ndarray) -> np.ndarray:
    """3-bit codes [..., R] → one unit each [..., 3R/8]: the 2-bit plane, then the 1-bit plane."""
    return np.concatenate([_pack_plane(codes & 3, 2), _pack_bits((codes >> 2) & 1)], axis=-1)


def _unpack_unit3(units: np.ndarray) -> np.ndarray:
    """Inverse of `_pack_unit3`: [..., 3R/8] → codes [..., R]."""
    r = units.shape[-1] * 8 // 3
    return _unpack_plane(units[..., : r // 4], 2) | (_unpack_bits(units[..., r // 4 :]) << 2)


def _pack_units3(blocks: np.ndarray) -> np.ndarray:
    """3-bit codes [n, nb, 32] → [n, nb·12]: units of two blocks, a last odd block alone."""
    n, nb = blocks.shape[:2]
    pairs = nb // 2
    parts = [_pack_unit3(blocks[:, : 2 * pairs].reshape(n, pairs, 64)).reshape(n, -1)]
    if nb % 2:
        parts.append(_pack_unit3(blocks[:, -1]))
    return np.concatenate(parts, axis=-1)


def _unpack_units3(packed: np.ndarray, nb: int) -> np.ndarray:
    """Inverse of `_pack_units3`: [n, nb·12] → codes [n, nb·32]."""
    n = packed.shape[0]
    pairs = nb // 2
    parts = [_unpack_unit3(packed[:, : 24 * pairs].reshape(n, pairs, 24)).reshape(n, -1)]
    if nb % 2:
        parts.append(_unpack_unit3(packed[:, 24 * pairs :]))
    return np.concatenate(parts, axis=-1)


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
    if bits == 3:
        return _pack_units3(blocks)
    (p,) = PLANES[bits]
    return (blocks if p == 8 else _pack_plane(blocks, p)).reshape(n, -1)


def unpack_codes(packed: np.ndarray, k: int, bits: int) -> np.ndarray:
    """Inverse of `pack_codes`: packed uint8 [N, row_bytes] → codes uint8 [N, K]."""
    if bits not in PLANES:
        raise ValueError(f"bits={bits} has no packed layout; choose one of {sorted(PLANES)}")
    n = packed.shape[0]
    row_bytes = packed_row_bytes(k, bits)
    if packed.shape != (n, row_bytes):
        raise ValueError(f"packed codes of shape {packed.shape} do not hold K={k} at {bits} bits")
    nb = row_bytes // block_bytes(bits)
    if bits == 3:
        return _unpack_units3(packed, nb)[:, :k]
    (p,) = PLANES[bits]
    blocks = packed.reshape(n, nb, block_bytes(bits))
    codes = blocks if p == 8 else _unpack_plane(blocks, p)
    return codes.reshape(n, -1)[:, :k]

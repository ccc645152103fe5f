"""ONNX Runtime's com.microsoft MatMulNBits weight layout (the spec of `--target matmulnbits`).

For Y[..., N] = A[..., K] · B[K, N], with block_size G (a power of 2 ≥ 16), bits b ∈ {2, 4, 8}
and n_blocks = ceil(K / G), stock ORT reads:

    tensor        dtype     shape                               meaning
    B             uint8     [N, n_blocks, G·b/8]                b-bit codes, rows = output n
    scales        T         [N · n_blocks]                      block scale, T = A's dtype
    zero_points   uint8     [N, ceil(n_blocks·b/8)]             b-bit zero point per block

    B[k, n] = (code[n, k] − zp[n, k // G]) · scales[n · n_blocks + k // G]

Codes are packed little end first: element j of a block sits in byte j·b/8 at bit offset
(j mod 8/b)·b (for 4 bits: low nibble = even element). The zero points of one row are packed
the same way along the blocks, and each row is padded to whole bytes on its own (an odd block
count at 4 bits leaves the high nibble of the row's last byte 0). The codes of a last, short
block are padded with 0; A has no elements there, so they never count.

There is no room for outliers: `fold` quantizes a weight on the AdpQ inlier grid with every
value clamped into it, and the cost is reported as extra weight error. Bits per weight:

    b · K_pad/K  +  (8·sizeof(T) + b) / G     e.g. 4-bit, G = 128, fp16 scales: 4.156
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing

from adpq_onnx.quant import affine

BITS = (2, 4, 8)


@dataclasses.dataclass(frozen=True)
class NBitsWeight:
    """The three MatMulNBits tensors of one weight plus its attributes."""

    k: int
    n: int
    bits: int
    block_size: int
    b: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray

    def tensors(self) -> dict[str, np.ndarray]:
        """Name → array, in MatMulNBits' input order (after A)."""
        return {"B": self.b, "scales": self.scales, "zero_points": self.zero_points}

    @property
    def n_blocks(self) -> int:
        return -(-self.k // self.block_size)

    @property
    def nbytes(self) -> int:
        return sum(int(t.nbytes) for t in self.tensors().values())

    @property
    def bits_per_weight(self) -> float:
        return self.nbytes * 8 / (self.k * self.n)


def check_params(bits: int, block_size: int) -> None:
    """Raise ValueError unless MatMulNBits can hold `bits` codes in blocks of `block_size`."""
    if bits not in BITS:
        raise ValueError(f"MatMulNBits supports bits {BITS}, not {bits}")
    if block_size < 16 or block_size & (block_size - 1):
        raise ValueError(f"MatMulNBits needs a power-of-2 block_size >= 16, not {block_size}")


def _pack_along(values: np.ndarray, bits: int) -> np.ndarray:
    """uint8 [..., L] (each < 2^bits) → uint8 [..., ceil(L·bits/8)], low bits first."""
    per = 8 // bits
    length = values.shape[-1]
    padded = np.zeros(values.shape[:-1] + (-(-length // per) * per,), dtype=np.uint8)
    padded[..., :length] = values
    groups = padded.reshape(values.shape[:-1] + (-1, per))
    out = np.zeros(groups.shape[:-1], dtype=np.uint8)
    for j in range(per):
        out |= (groups[..., j] << (j * bits)).astype(np.uint8)
    return out


def _unpack_along(packed: np.ndarray, bits: int, length: int) -> np.ndarray:
    """Inverse of `_pack_along`."""
    per = 8 // bits
    mask = (1 << bits) - 1
    parts = [(packed >> (j * bits)) & mask for j in range(per)]
    return np.stack(parts, axis=-1).reshape(packed.shape[:-1] + (-1,))[..., :length]


def pack(
    codes: np.ndarray,
    scales: np.ndarray,
    zeros: np.ndarray,
    bits: int,
    block_size: int,
    scale_dtype: np.typing.DTypeLike = np.float16,
) -> NBitsWeight:
    """codes uint8 [N, K], scales [N, n_blocks], zeros uint8 [N, n_blocks] → NBitsWeight."""
    check_params(bits, block_size)
    n, k = codes.shape
    nb = -(-k // block_size)
    if scales.shape != (n, nb) or zeros.shape != (n, nb):
        raise ValueError(f"scales/zeros must be [{n}, {nb}], got {scales.shape}, {zeros.shape}")
    if codes.size and int(codes.max()) >> bits or zeros.size and int(zeros.max()) >> bits:
        raise ValueError(f"a code or zero point does not fit in {bits} bits")
    padded = np.zeros((n, nb * block_size), dtype=np.uint8)
    padded[:, :k] = codes
    b = _pack_along(padded.reshape(n, nb, block_size), bits)
    return NBitsWeight(
        k=k,
        n=n,
        bits=bits,
        block_size=block_size,
        b=np.ascontiguousarray(b),
        scales=np.ascontiguousarray(scales.astype(scale_dtype).reshape(-1)),
        zero_points=np.ascontiguousarray(_pack_along(zeros.astype(np.uint8), bits)),
    )


def unpack(w: NBitsWeight) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NBitsWeight → (codes uint8 [N, K], scales float32 [N, nb], zeros uint8 [N, nb])."""
    n, nb = w.n, w.n_blocks
    blob = w.block_size * w.bits // 8
    if w.b.shape != (n, nb, blob) or w.b.dtype != np.uint8:
        raise ValueError(f"B: expected uint8[{n}, {nb}, {blob}], got {w.b.dtype}{list(w.b.shape)}")
    codes = _unpack_along(w.b, w.bits, w.block_size).reshape(n, nb * w.block_size)[:, : w.k]
    scales = w.scales.astype(np.float32).reshape(n, nb)
    zeros = _unpack_along(w.zero_points, w.bits, nb)
    return codes, scales, zeros


def dequantize_b(w: NBitsWeight) -> np.ndarray:
    """The float32 B[K, N] that stock ORT computes with."""
    codes, scales, zeros = unpack(w)
    return affine.dequantize(codes, scales, zeros, w.block_size).T


def fold(
    w: np.ndarray,
    scales: np.ndarray,
    zeros: np.ndarray,
    bits: int,
    block_size: int,
    scale_dtype: np.typing.DTypeLike = np.float16,
) -> NBitsWeight:
    """Quantize w[N, K] on a given grid, clamping every value (outliers too) into it."""
    codes = affine.quantize(w, scales, zeros, bits, block_size)
    return pack(codes, scales, zeros, bits, block_size, scale_dtype)

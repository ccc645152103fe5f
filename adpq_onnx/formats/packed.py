"""The AdpQ packed weight: the tensors an `AdpQMatMul` node reads (the spec; docs/FORMAT.md).

For an ONNX MatMul  Y[..., N] = A[..., K] · B[K, N],  B is stored transposed (rows = output
channels n, like ORT's MatMulNBits) as:

    tensor          dtype          shape                     meaning
    codes           uint8          [N, ceil(K/32)·4·bits]    b-bit codes, bit planes (bitpack.py)
    scales          float16        [N, n_groups]             group scale
    zero_points     uint8          [N, n_groups]             integer zero point, < 2^bits
    outlier_ptr     int32          [N + 1]                   CSR row pointers
    outlier_idx     uint16         [nnz]                     K index, ascending per row
    outlier_val     float16|int8   [nnz]                     outlier value (or int8 code)
    outlier_scale   float16        [N]                       only with int8 outlier_val

with n_groups = ceil(K / group_size), group g covering k in [g·G, min((g+1)·G, K)), and

    B[k, n] = (code[n, k] − zero_points[n, g]) · scales[n, g]  +  Σ outliers of row n at k
    outlier = outlier_val[i]            (float16)
            = outlier_val[i] · outlier_scale[n]   (int8)

Bits per weight (every stored bit over K·N):

    bits · K_pad/K  +  24 / G  +  32·(N+1)/(K·N)  +  α · (16 + 16)    (float16 outliers)
                                                   +  α · (16 + 8) + 16/K  (int8 outliers)

e.g. 3-bit, G = 128, α = 0.5 %, K = N = 4096: 3 + 0.1875 + 0.0078 + 0.16 = 3.355.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from adpq_onnx.formats import bitpack
from adpq_onnx.quant.adpq import QuantizedWeight


@dataclasses.dataclass(frozen=True)
class PackedWeight:
    """The packed tensors of one weight plus the attributes needed to read them."""

    k: int
    n: int
    bits: int
    group_size: int
    codes: np.ndarray
    scales: np.ndarray
    zero_points: np.ndarray
    outlier_ptr: np.ndarray
    outlier_idx: np.ndarray
    outlier_val: np.ndarray
    outlier_scale: np.ndarray | None = None

    @classmethod
    def from_op(cls, attrs: Mapping[str, int], tensors: Mapping[str, np.ndarray]) -> PackedWeight:
        """From an AdpQMatMul node's attributes (K, N, bits, block_size) and packed tensors
        (named as in `tensors()`; outlier_scale optional)."""
        return cls(
            k=int(attrs["K"]),
            n=int(attrs["N"]),
            bits=int(attrs["bits"]),
            group_size=int(attrs["block_size"]),
            **tensors,
        )

    def tensors(self) -> dict[str, np.ndarray]:
        """Name → array, in the op's input order (outlier_scale only when present)."""
        out = {
            "codes": self.codes,
            "scales": self.scales,
            "zero_points": self.zero_points,
            "outlier_ptr": self.outlier_ptr,
            "outlier_idx": self.outlier_idx,
            "outlier_val": self.outlier_val,
        }
        if self.outlier_scale is not None:
            out["outlier_scale"] = self.outlier_scale
        return out

    @property
    def nbytes(self) -> int:
        return sum(int(t.nbytes) for t in self.tensors().values())

    @property
    def bits_per_weight(self) -> float:
        return self.nbytes * 8 / (self.k * self.n)


def pack(qw: QuantizedWeight) -> PackedWeight:
    """QuantizedWeight → PackedWeight (lossless)."""
    n, k = qw.shape
    return PackedWeight(
        k=k,
        n=n,
        bits=qw.bits,
        group_size=qw.group_size,
        codes=bitpack.pack_codes(qw.codes, qw.bits),
        scales=np.ascontiguousarray(qw.scales, dtype=np.float16),
        zero_points=np.ascontiguousarray(qw.zeros, dtype=np.uint8),
        outlier_ptr=np.ascontiguousarray(qw.outlier_ptr, dtype=np.int32),
        outlier_idx=np.ascontiguousarray(qw.outlier_idx, dtype=np.uint16),
        outlier_val=np.ascontiguousarray(qw.outlier_val),
        outlier_scale=None if qw.outlier_scale is None else qw.outlier_scale.astype(np.float16),
    )


def unpack(pw: PackedWeight) -> QuantizedWeight:
    """PackedWeight → QuantizedWeight (lossless); validates every shape against K, N, bits."""
    validate(pw)
    return QuantizedWeight(
        bits=pw.bits,
        group_size=pw.group_size,
        codes=bitpack.unpack_codes(pw.codes, pw.k, pw.bits),
        scales=pw.scales,
        zeros=pw.zero_points,
        outlier_ptr=pw.outlier_ptr,
        outlier_idx=pw.outlier_idx,
        outlier_val=pw.outlier_val,
        outlier_scale=pw.outlier_scale,
    )


def n_groups(k: int, group_size: int) -> int:
    return -(-k // group_size)


def validate(pw: PackedWeight) -> None:
    """Raise ValueError naming the first tensor whose shape or dtype disagrees with K, N, bits."""
    k, n = pw.k, pw.n
    ng = n_groups(k, pw.group_size)
    expect = {
        "codes": (np.uint8, (n, bitpack.packed_row_bytes(k, pw.bits))),
        "scales": (np.float16, (n, ng)),
        "zero_points": (np.uint8, (n, ng)),
        "outlier_ptr": (np.int32, (n + 1,)),
    }
    for name, (dtype, shape) in expect.items():
        t = getattr(pw, name)
        if t.dtype != dtype or t.shape != shape:
            raise ValueError(
                f"{name}: expected {np.dtype(dtype).name}{list(shape)}, "
                f"got {t.dtype.name}{list(t.shape)}"
            )
    nnz = int(pw.outlier_ptr[-1])
    if pw.outlier_ptr[0] != 0 or np.any(np.diff(pw.outlier_ptr) < 0):
        raise ValueError("outlier_ptr must start at 0 and never decrease")
    if pw.outlier_idx.shape != (nnz,) or pw.outlier_idx.dtype != np.uint16:
        raise ValueError(
            f"outlier_idx: expected uint16[{nnz}], got {pw.outlier_idx.dtype.name}"
            f"{list(pw.outlier_idx.shape)}"
        )
    if nnz and int(pw.outlier_idx.max()) >= k:
        raise ValueError(f"outlier_idx holds an index >= K={k}")
    if pw.outlier_val.shape != (nnz,) or pw.outlier_val.dtype not in (np.float16, np.int8):
        raise ValueError(
            f"outlier_val: expected float16 or int8 [{nnz}], got "
            f"{pw.outlier_val.dtype.name}{list(pw.outlier_val.shape)}"
        )
    has_scale = pw.outlier_scale is not None
    if has_scale != (pw.outlier_val.dtype == np.int8):
        raise ValueError("outlier_scale must be given exactly when outlier_val is int8")
    if pw.outlier_scale is not None and pw.outlier_scale.shape != (n,):
        raise ValueError(
            f"outlier_scale: expected float16[{n}], got {list(pw.outlier_scale.shape)}"
        )

"""AdpQ weight quantization: adaptive-LASSO outliers kept sparse, inliers min-max per group.

    W[N, K]  ≈  dequant(codes, scales, zeros)  +  S

where S is sparse (the outliers, a fraction α of W) stored in CSR by row with its own precision,
and the group grids are fitted to the inliers only, so that a few large weights no longer
stretch every group's range.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from adpq_onnx.quant import affine, lasso, rounding


@dataclasses.dataclass(frozen=True)
class QuantizedWeight:
    """A quantized weight, unpacked. Rows are output channels (the columns of ONNX B[K, N]).

    Attributes:
        codes: uint8 [N, K], each < 2^bits.
        scales: float16 [N, n_groups].
        zeros: uint8 [N, n_groups], integer zero points.
        outlier_ptr: int32 [N + 1], CSR row pointers into outlier_idx / outlier_val.
        outlier_idx: uint16 [nnz], the K index of each outlier, ascending within a row.
        outlier_val: float16 [nnz], or int8 [nnz] codes scaled by outlier_scale.
        outlier_scale: float16 [N] when outlier_val is int8, else None.
    """

    bits: int
    group_size: int
    codes: np.ndarray
    scales: np.ndarray
    zeros: np.ndarray
    outlier_ptr: np.ndarray
    outlier_idx: np.ndarray
    outlier_val: np.ndarray
    outlier_scale: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(N, K)."""
        n, k = self.codes.shape
        return n, k

    @property
    def nnz(self) -> int:
        return int(self.outlier_idx.size)

    def outlier_values(self) -> np.ndarray:
        """Outlier values as float32 [nnz]."""
        rows = np.repeat(np.arange(self.shape[0]), np.diff(self.outlier_ptr))
        return _outlier_floats(self.outlier_val, self.outlier_scale, rows)

    def dense_outliers(self, rows: slice = slice(None)) -> np.ndarray:
        """S (or the given block of its rows) as a dense float32 [rows, K]."""
        start, stop, _ = rows.indices(self.shape[0])
        k = self.shape[1]
        out = np.zeros((stop - start, k), dtype=np.float32)
        lo, hi = int(self.outlier_ptr[start]), int(self.outlier_ptr[stop])
        counts = np.diff(self.outlier_ptr[start : stop + 1])
        r = np.repeat(np.arange(stop - start), counts)
        scale = None if self.outlier_scale is None else self.outlier_scale[start:stop]
        vals = _outlier_floats(self.outlier_val[lo:hi], scale, r)
        np.add.at(out, (r, self.outlier_idx[lo:hi].astype(np.int64)), vals)
        return out

    def dequantize(self, rows: slice = slice(None)) -> np.ndarray:
        """The reconstructed weight (or a block of its rows), float32 [rows, K]."""
        dense = affine.dequantize(
            self.codes[rows], self.scales[rows], self.zeros[rows], self.group_size
        )
        return dense + self.dense_outliers(rows)


def relative_error(qw: QuantizedWeight, w: np.ndarray) -> float:
    """‖dequantize(qw) − w‖_F / ‖w‖_F, computed in row blocks (bounded memory)."""
    n, k = qw.shape
    step = max(1, ROW_BLOCK_ELEMENTS // max(k, 1))
    err = ref = 0.0
    for i in range(0, n, step):
        block = w[i : i + step].astype(np.float32)
        err += float(np.square(qw.dequantize(slice(i, i + step)) - block).sum(dtype=np.float64))
        ref += float(np.square(block).sum(dtype=np.float64))
    return (err / ref) ** 0.5 if ref > 0 else err**0.5


def _outlier_floats(val: np.ndarray, scale: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """Stored outlier values as float32: float16 as is, int8 codes times their row's scale."""
    vals = val.astype(np.float32)
    if scale is not None:
        vals *= scale.astype(np.float32)[rows]
    return vals


def _round_outliers(
    vals: np.ndarray, rows: np.ndarray, n: int, dtype: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Store outlier values at their own precision: float16, or int8 with a per-row fp16 scale."""
    if dtype == "float16":
        return vals.astype(np.float16), None
    absmax = np.zeros(n, dtype=np.float32)
    np.maximum.at(absmax, rows, np.abs(vals))
    oscale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float16)
    q = np.clip(np.round(vals / oscale.astype(np.float32)[rows]), -127, 127).astype(np.int8)
    return q, oscale


# Weights are quantized in blocks of rows of at most this many elements, so that the working
# set (float32 copies, masks, grouped views) stays a few tens of MB whatever the weight's size.
ROW_BLOCK_ELEMENTS = 1 << 21


def quantize_weight(
    w: np.ndarray,
    *,
    bits: int,
    group_size: int,
    outlier_ratio: float,
    gamma: float = 1.0,
    lasso_scope: str = "row",
    outlier_mode: str = "exact",
    outlier_dtype: str = "float16",
    range_search: int = 0,
    proxy: np.ndarray | None = None,
    proxy_side: str = "input",
    damp: float = 0.01,
) -> QuantizedWeight:
    """Quantize w[N, K] (rows = output channels). See `adpq_onnx.AdpQConfig` for the options.

    With a `proxy` H (`adpq_onnx.quant.proxies`), the grid and the outlier positions are chosen
    as without it, then the codes and outlier values are re-rounded by `rounding.gptq_round`:
    H[K, K] on the ``input`` side (error feedback along K within each row), H[N, N] on the
    ``output`` side (along N within each column).
    """
    if w.ndim != 2:
        raise ValueError(f"expected a 2-D weight [N, K], got shape {w.shape}")
    if outlier_mode not in ("exact", "shrink"):
        raise ValueError(f"unknown outlier mode {outlier_mode!r}")
    n, k = w.shape
    if k > 65536:
        raise ValueError(f"K={k} exceeds 65536, the reach of the uint16 outlier index")
    if not np.isfinite(w).all():
        raise ValueError("weight contains NaN or Inf")
    # Row and group scopes are local to a row; the matrix scope's λ is solved once, up front.
    cut = None
    if lasso_scope == "matrix" and outlier_ratio > 0:
        cut = lasso.matrix_threshold(w, outlier_ratio)
    step = max(1, ROW_BLOCK_ELEMENTS // max(k, 1))
    parts = [
        _quantize_rows(
            np.ascontiguousarray(w[i : i + step], dtype=np.float32),
            bits=bits,
            group_size=group_size,
            outlier_ratio=outlier_ratio,
            gamma=gamma,
            lasso_scope=lasso_scope,
            outlier_mode=outlier_mode,
            outlier_dtype=outlier_dtype,
            range_search=range_search,
            cut=cut,
        )
        for i in range(0, n, step)
    ]
    qw = parts[0] if len(parts) == 1 else _concat_rows(parts)
    if proxy is None:
        return qw
    return _reround(qw, w.astype(np.float32, copy=False), proxy, proxy_side, damp)


def _reround(
    qw: QuantizedWeight, w: np.ndarray, proxy: np.ndarray, side: str, damp: float
) -> QuantizedWeight:
    """`qw` with its codes and outlier values chosen by `gptq_round` on the same grid."""
    if side not in ("input", "output"):
        raise ValueError(f"unknown proxy side {side!r}")
    n, k = qw.shape
    rows = np.repeat(np.arange(n), np.diff(qw.outlier_ptr))
    cols = qw.outlier_idx.astype(np.int64)
    mask = np.zeros((n, k), dtype=bool)
    mask[rows, cols] = True
    scale = affine.expand_groups(qw.scales.astype(np.float32), k, qw.group_size)
    zero = affine.expand_groups(qw.zeros.astype(np.float32), k, qw.group_size)
    step = None
    if qw.outlier_scale is not None:
        step = np.repeat(qw.outlier_scale.astype(np.float32)[:, None], k, axis=1)
    if side == "input":
        codes, stored = rounding.gptq_round(w, proxy, scale, zero, qw.bits, mask, step, damp=damp)
    else:
        codes_t, stored_t = rounding.gptq_round(
            w.T,
            proxy,
            scale.T,
            zero.T,
            qw.bits,
            mask.T,
            None if step is None else step.T,
            damp=damp,
        )
        codes, stored = codes_t.T.copy(), stored_t.T
    vals = stored[rows, cols]
    oval: np.ndarray = vals.astype(np.float16)
    if step is not None:
        oval = np.clip(np.round(vals / step[rows, cols]), -127, 127).astype(np.int8)
    return dataclasses.replace(qw, codes=codes, outlier_val=oval)


def _quantize_rows(
    w: np.ndarray,
    *,
    bits: int,
    group_size: int,
    outlier_ratio: float,
    gamma: float,
    lasso_scope: str,
    outlier_mode: str,
    outlier_dtype: str,
    range_search: int,
    cut: tuple[float, float] | None,
) -> QuantizedWeight:
    """quantize_weight on a block of rows; `cut` = (outlier cut, largest inlier) of the matrix."""
    n, k = w.shape
    if cut is not None:
        mask = np.abs(w) >= cut[0]
    else:
        mask = lasso.select_outliers(w, outlier_ratio, lasso_scope, group_size)
    rows, cols = np.nonzero(mask)  # row-major: sorted by row, then by K
    if outlier_mode == "shrink":
        if cut is not None:
            t = np.full(w.shape, cut[1], dtype=np.float32)
        else:
            t = lasso.threshold_per_row(w, mask, lasso_scope, group_size)
        target = lasso.soft_threshold(w, t, gamma)[rows, cols]
        del t
    else:
        target = w[rows, cols]
    oval, oscale = _round_outliers(target, rows, n, outlier_dtype)
    ptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n), out=ptr[1:])
    qw = QuantizedWeight(
        bits=bits,
        group_size=group_size,
        codes=np.zeros((0, k), dtype=np.uint8),
        scales=np.zeros(0, np.float16),
        zeros=np.zeros(0, np.uint8),
        outlier_ptr=ptr,
        outlier_idx=cols.astype(np.uint16),
        outlier_val=oval,
        outlier_scale=oscale,
    )
    # Grids are fitted to the inliers; what is left at an outlier's slot (w − S) is quantized
    # on that grid: in exact mode the slot is forced to the zero point so it adds exactly 0.
    keep = ~mask if rows.size else None
    scales, zeros = affine.choose_qparams(w, keep, bits, group_size, search=range_search)
    residual = w.copy()
    residual[rows, cols] -= _outlier_floats(oval, oscale, rows)
    codes = affine.quantize(residual, scales, zeros, bits, group_size)
    if outlier_mode == "exact" and rows.size:
        codes[rows, cols] = zeros[rows, cols // group_size]
    return dataclasses.replace(qw, codes=codes, scales=scales, zeros=zeros)


def _concat_rows(parts: list[QuantizedWeight]) -> QuantizedWeight:
    """Stack QuantizedWeights of consecutive row blocks (CSR pointers re-based)."""
    offsets = np.cumsum([0] + [int(p.outlier_ptr[-1]) for p in parts[:-1]])
    ptr = np.concatenate(
        [np.zeros(1, np.int32)]
        + [p.outlier_ptr[1:] + o for p, o in zip(parts, offsets, strict=True)]
    ).astype(np.int32)
    scale = parts[0].outlier_scale
    return QuantizedWeight(
        bits=parts[0].bits,
        group_size=parts[0].group_size,
        codes=np.concatenate([p.codes for p in parts]),
        scales=np.concatenate([p.scales for p in parts]),
        zeros=np.concatenate([p.zeros for p in parts]),
        outlier_ptr=ptr,
        outlier_idx=np.concatenate([p.outlier_idx for p in parts]),
        outlier_val=np.concatenate([p.outlier_val for p in parts]),
        outlier_scale=None if scale is None else np.concatenate([p.outlier_scale for p in parts]),
    )


def storage_bits(qw: QuantizedWeight) -> dict[str, int]:
    """Exact storage of every tensor of the packed form, in bits.

    Codes count their padding to a multiple of 32 along K (what is stored).
    """
    n, k = qw.shape
    k_pad = -(-k // 32) * 32
    parts = {
        "codes": n * k_pad * qw.bits,
        "scales": qw.scales.size * 16,
        "zero_points": qw.zeros.size * 8,
        "outlier_ptr": qw.outlier_ptr.size * 32,
        "outlier_idx": qw.outlier_idx.size * 16,
        "outlier_val": qw.outlier_val.size * qw.outlier_val.dtype.itemsize * 8,
    }
    if qw.outlier_scale is not None:
        parts["outlier_scale"] = qw.outlier_scale.size * 16
    return parts


def bits_per_weight(qw: QuantizedWeight) -> float:
    """True bits per weight: every stored bit divided by N·K."""
    n, k = qw.shape
    return sum(storage_bits(qw).values()) / (n * k)

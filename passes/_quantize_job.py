"""One weight's quantization as a picklable job, so that `QuantizeWeightsPass` can spread
weights over processes and read each weight's bytes only where and when it is quantized.

No graph here: a `Job` names its data (an array, or a byte range of a file that the worker
reads itself, which keeps the parent's memory flat), and `run_job` returns plain arrays and
numbers.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from adpq_onnx.config import AdpQConfig, LayerSettings
from adpq_onnx.formats import matmulnbits, packed
from adpq_onnx.ops import spec
from adpq_onnx.quant import adpq, affine, proxies

HISTOGRAM_BINS = 64


@dataclasses.dataclass(frozen=True)
class FileSlice:
    """A tensor stored raw (little-endian) in a file at `offset`."""

    path: str
    offset: int
    dtype: str
    shape: tuple[int, ...]

    def read(self) -> np.ndarray:
        dt = np.dtype(self.dtype).newbyteorder("<")
        count = int(np.prod(self.shape))
        data = np.fromfile(self.path, dtype=dt, count=count, offset=self.offset)
        if data.size != count:
            raise ValueError(f"{self.path} ends inside the tensor at offset {self.offset}")
        return data.reshape(self.shape)


@dataclasses.dataclass(frozen=True)
class Proxy:
    """The rounding proxy of a weight: `proxies.<kind>(**partners, **dims)`, on `side`."""

    kind: str
    partners: tuple[tuple[str, np.ndarray | FileSlice], ...]
    dims: tuple[tuple[str, int], ...]
    side: str

    def build(self) -> np.ndarray:
        args: dict[str, object] = {k: _read(v) for k, v in self.partners}
        args.update(self.dims)
        return getattr(proxies, self.kind)(**args)  # type: ignore[no-any-return]


@dataclasses.dataclass(frozen=True)
class Job:
    """Quantize B[K, N] (`source`) with `settings`, packed for `config.target`."""

    name: str
    source: np.ndarray | FileSlice
    settings: LayerSettings
    config: AdpQConfig
    scale_dtype: str = "float16"  # MatMulNBits scales have A's dtype
    proxy: Proxy | None = None


def _read(source: np.ndarray | FileSlice) -> np.ndarray:
    return source.read() if isinstance(source, FileSlice) else np.asarray(source)


@dataclasses.dataclass
class Result:
    """The packed tensors (in the op's input order), the node attributes and the stats."""

    name: str
    tensors: dict[str, np.ndarray]
    attrs: dict[str, int]
    nnz: int
    bits_per_weight: float
    weight_rel_error: float
    adpq_rel_error: float
    threshold: float | None
    histogram: tuple[list[float], list[int]]
    seconds: float


def run_job(job: Job) -> Result:
    """Quantize and pack one weight; raises ValueError for NaN / Inf and bad shapes."""
    start = time.perf_counter()
    data = _read(job.source)
    w = np.ascontiguousarray(data.T, dtype=np.float32)  # [N, K], one copy
    del data
    cfg, s = job.config, job.settings
    # The proxy only steers rounding on AdpQ's own grid; MatMulNBits refits the grid below.
    use_proxy = job.proxy is not None and cfg.target == "adpq"
    qw = adpq.quantize_weight(
        w,
        bits=s.bits,
        group_size=s.group_size,
        outlier_ratio=s.outlier_ratio,
        gamma=cfg.gamma,
        lasso_scope=cfg.lasso_scope,
        outlier_mode=cfg.outlier_mode,
        outlier_dtype=cfg.outlier_dtype,
        range_search=cfg.range_search,
        proxy=job.proxy.build() if use_proxy and job.proxy is not None else None,
        proxy_side=job.proxy.side if job.proxy is not None else "input",
        damp=cfg.rounding.damp,
    )
    adpq_error = adpq.relative_error(qw, w)
    n, k = w.shape
    attrs = {"K": k, "N": n, "bits": s.bits, "block_size": s.group_size}
    if cfg.target == "matmulnbits":
        # MatMulNBits has no sparse part: the outliers go back into the grid, which must then
        # span them (a grid fitted to the inliers would clamp the largest weights, the ones
        # that matter most). The report keeps AdpQ's error beside it: the cost of folding.
        scales, zeros = affine.choose_qparams(w, None, s.bits, s.group_size)
        nb = matmulnbits.fold(w, scales, zeros, s.bits, s.group_size, job.scale_dtype)
        tensors = nb.tensors()
        error = relative_error(matmulnbits.dequantize_b(nb).T, w)
        bpw = nb.bits_per_weight
    else:
        tensors = packed.pack(qw).tensors()
        attrs.update(spec.layout_attrs(s.bits))
        error, bpw = adpq_error, adpq.bits_per_weight(qw)
    rows = np.repeat(np.arange(n), np.diff(qw.outlier_ptr))
    # The smallest |w| kept apart: the LASSO cut (per row it may be higher).
    threshold = float(np.abs(w[rows, qw.outlier_idx.astype(np.int64)]).min()) if qw.nnz else None
    counts, edges = np.histogram(w, bins=HISTOGRAM_BINS)
    return Result(
        name=job.name,
        tensors=tensors,
        attrs=attrs,
        nnz=qw.nnz,
        bits_per_weight=bpw,
        weight_rel_error=error,
        adpq_rel_error=adpq_error,
        threshold=threshold,
        histogram=([float(e) for e in edges], [int(c) for c in counts]),
        seconds=time.perf_counter() - start,
    )


def relative_error(approx: np.ndarray, exact: np.ndarray) -> float:
    """‖approx − exact‖_F / ‖exact‖_F (the absolute norm when exact is 0)."""
    norm = float(np.linalg.norm(exact))
    diff = float(np.linalg.norm(approx - exact))
    return diff / norm if norm > 0 else diff

"""Executable spec of the custom operator: an `onnx.reference` op built on the format's unpack.

Every kernel (C++ CPU, CUDA) is tested against this, and graph passes can be tested with
`onnx.reference.ReferenceEvaluator(model, new_ops=[AdpQMatMul])` without compiling anything.
"""

from __future__ import annotations

import numpy as np
from onnx.reference.op_run import OpRun

from adpq_onnx.formats.packed import PackedWeight, unpack
from adpq_onnx.ops import spec


def dequantize_b(pw: PackedWeight) -> np.ndarray:
    """The float32 B[K, N] that a packed weight stands for."""
    return unpack(pw).dequantize().T


def adpq_matmul(a: np.ndarray, pw: PackedWeight, bias: np.ndarray | None = None) -> np.ndarray:
    """Y = A · B (+ bias), accumulated in float32 and returned in A's dtype."""
    if a.shape[-1] != pw.k:
        raise ValueError(f"A has K={a.shape[-1]} but the weight has K={pw.k}")
    y = a.astype(np.float32) @ dequantize_b(pw)
    if bias is not None:
        y = y + bias.astype(np.float32)
    return y.astype(a.dtype)


class AdpQMatMul(OpRun):
    """Reference `adpq_onnx::AdpQMatMul` (see adpq_onnx/ops/spec.py)."""

    op_domain = spec.DOMAIN

    def _run(  # type: ignore[override]
        self,
        a,
        codes,
        scales,
        zero_points,
        outlier_ptr,
        outlier_idx,
        outlier_val,
        bias=None,
        outlier_scale=None,
        K=None,  # noqa: N803 - ONNX attribute names
        N=None,  # noqa: N803
        bits=None,
        block_size=None,
        accuracy_level=None,  # a speed hint for kernels; the spec is the float32 result
        packing=None,
    ):
        if bits == 3 and packing != spec.PACKING_3BIT:
            raise ValueError(
                f"3-bit codes without attribute packing={spec.PACKING_3BIT} are in the per-block"
                " layout of adpq-onnx 0.1; quantize the float model again"
            )
        attrs = {"K": K, "N": N, "bits": bits, "block_size": block_size}
        tensors = {
            "codes": codes,
            "scales": scales,
            "zero_points": zero_points,
            "outlier_ptr": outlier_ptr,
            "outlier_idx": outlier_idx,
            "outlier_val": outlier_val,
            "outlier_scale": outlier_scale,
        }
        pw = PackedWeight.from_op(attrs, tensors)
        return (adpq_matmul(a, pw, bias),)

"""The contract of the custom operator, shared by the passes, the reference and the tests.

    AdpQMatMul(A, codes, scales, zero_points, outlier_ptr, outlier_idx, outlier_val,
               [bias], [outlier_scale]) -> Y

    A            T      [..., K]        float32 or float16 activations
    codes .. outlier_val                the packed weight (adpq_onnx/formats/packed.py)
    bias         T      [N]             optional (empty name when absent)
    outlier_scale float16 [N]           optional; required when outlier_val is int8
    Y            T      [..., N]        Y = A · B + bias

    attributes: K, N, bits (2|3|4|8), block_size (the group size), optional accuracy_level
    (0: float32 compute; 4: the CPU kernel may quantize A to int8 per group) — named as in
    ORT's com.microsoft.MatMulNBits so that readers can carry over what they know — and,
    on 3-bit nodes only, packing = 2 (the codes' layout: units of two blocks, formats/bitpack;
    3-bit nodes of adpq-onnx 0.1 lack it and are refused rather than misread).

The domain string is the same constant in custom_ops/include/adpq/format.h (kAdpqDomain);
tests/custom_ops/test_domain.py runs a one-node model to check that they agree.
"""

from __future__ import annotations

DOMAIN = "adpq_onnx"
DOMAIN_VERSION = 1
OP_TYPE = "AdpQMatMul"

INPUTS = (
    "A",
    "codes",
    "scales",
    "zero_points",
    "outlier_ptr",
    "outlier_idx",
    "outlier_val",
    "bias",
    "outlier_scale",
)
PACKED_INPUTS = INPUTS[1:7]
ATTRIBUTES = ("K", "N", "bits", "block_size")
OPTIONAL_ATTRIBUTES = ("accuracy_level", "packing")
PACKING_3BIT = 2


def layout_attrs(bits: int) -> dict[str, int]:
    """The attributes that name the codes' layout: `packing` on 3-bit nodes."""
    return {"packing": PACKING_3BIT} if bits == 3 else {}

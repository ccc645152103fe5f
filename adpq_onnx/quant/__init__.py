"""The AdpQ maths: pure numpy, no ONNX, no I/O."""

from adpq_onnx.quant.adpq import QuantizedWeight, bits_per_weight, quantize_weight, storage_bits

__all__ = ["QuantizedWeight", "bits_per_weight", "quantize_weight", "storage_bits"]

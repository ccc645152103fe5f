"""Graph passes of the AdpQ pipeline (installed as `adpq_onnx.passes`); see `build_pipeline`."""

from adpq_onnx.passes._plan import QuantPlan, WeightPlan
from adpq_onnx.passes.cleanup import CleanupPass
from adpq_onnx.passes.fold_transposed_weights import FoldTransposedWeightsPass
from adpq_onnx.passes.gemm_to_matmul import GemmToMatMulPass
from adpq_onnx.passes.learn_transforms import LearnTransformsPass
from adpq_onnx.passes.pair_weights import PairWeightsPass
from adpq_onnx.passes.quantize_weights import QuantizeWeightsPass
from adpq_onnx.passes.replace_matmul import ReplaceMatMulWithAdpQPass
from adpq_onnx.passes.replace_matmul_nbits import ReplaceMatMulWithMatMulNBitsPass
from adpq_onnx.passes.select_matmuls import SelectMatMulsPass

__all__ = [
    "CleanupPass",
    "FoldTransposedWeightsPass",
    "GemmToMatMulPass",
    "LearnTransformsPass",
    "PairWeightsPass",
    "QuantPlan",
    "QuantizeWeightsPass",
    "ReplaceMatMulWithAdpQPass",
    "ReplaceMatMulWithMatMulNBitsPass",
    "SelectMatMulsPass",
    "WeightPlan",
]

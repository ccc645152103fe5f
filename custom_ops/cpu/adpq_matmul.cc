#include "cpu/adpq_matmul.h"

#include <algorithm>
#include <vector>

#include "adpq/format.h"
#include "adpq/half.h"
#include "common/error.h"
#include "cpu/dequant_gemm.h"
#include "cpu/register.h"

namespace adpq::cpu {
namespace {

// Runs tasks on the session's intra-op thread pool (serially when it has one thread).
class OrtRunner : public ParallelRunner {
 public:
  explicit OrtRunner(const Ort::KernelContext& ctx) : ctx_(ctx) {}
  void Run(size_t total, void (*fn)(void*, size_t), void* data) const override {
    if (total == 1) {
      fn(data, 0);
    } else {
      ctx_.ParallelFor(fn, total, /*num_batch=*/0, data);
    }
  }

 private:
  const Ort::KernelContext& ctx_;
};

// A as float [m, PaddedK(k)] with zeros past K: converts float16 once, copies float32 only when
// K is not already a multiple of 32.
const float* PaddedFloatA(const MatMulArgs& args, int64_t k, std::vector<float>& buffer) {
  const int64_t kpad = PaddedK(k);
  const bool is_half = args.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  if (!is_half && kpad == k) return static_cast<const float*>(args.a);
  buffer.assign(static_cast<size_t>(args.m * kpad), 0.0f);
  for (int64_t i = 0; i < args.m; ++i) {
    float* dst = buffer.data() + i * kpad;
    if (is_half) {
      HalfToFloatN(static_cast<const Half*>(args.a) + i * k, dst, k);
    } else {
      const float* src = static_cast<const float*>(args.a) + i * k;
      std::copy(src, src + k, dst);
    }
  }
  return buffer.data();
}

// accuracy_level as in ORT's MatMulNBits: 0 (unset), 1 float32, 2 float16, 3 bfloat16 (all
// computed in float32 here), 4 int8 activations.
constexpr int64_t kAccuracyInt8 = 4;

int64_t AccuracyLevel(const OrtApi& api, const OrtKernelInfo* info) {
  int64_t level = 0;
  if (OrtStatus* st = api.KernelInfoGetAttribute_int64(info, "accuracy_level", &level)) {
    api.ReleaseStatus(st);  // absent: the default
    return 0;
  }
  if (level < 0 || level > kAccuracyInt8) {
    Fail("attribute accuracy_level=", level, " must be in [0, 4] (4: int8 activations)");
  }
  return level;
}

// True when the outlier table (outlier_ptr, outlier_idx) comes from initializers.
bool OutliersAreConstant(const OrtKernelInfo* info) {
  const Ort::ConstKernelInfo ki(info);
  for (size_t index :
       {static_cast<size_t>(kInputOutlierPtr), static_cast<size_t>(kInputOutlierIdx)}) {
    int is_constant = 0;
    ki.GetTensorConstantInput(index, &is_constant);
    if (!is_constant) return false;
  }
  return true;
}

}  // namespace

OrtStatusPtr AdpQMatMulKernel::ComputeV2(OrtKernelContext* context) {
  return StatusFromExceptions(Ort::GetApi(), [&] { Compute(context); });
}

void AdpQMatMulKernel::Compute(OrtKernelContext* context) {
  Ort::KernelContext ctx(context);
  const bool check_csr = !(constant_outliers_ && csr_checked_.load(std::memory_order_relaxed));
  const MatMulArgs args = ReadArgs(ctx, attrs_, check_csr);
  if (constant_outliers_) csr_checked_.store(true, std::memory_order_relaxed);
  Ort::UnownedValue y_value = ctx.GetOutput(0, args.y_shape);
  if (args.m == 0) return;  // empty leading dimension: an empty Y

  std::vector<float> a_buffer;
  const float* a = PaddedFloatA(args, attrs_.k, a_buffer);
  const OrtRunner runner(ctx);
  GemmOptions options;
  options.int8_activations = int8_activations_;
  if (args.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
    DequantGemm(args.b, a, args.m, static_cast<const float*>(args.bias),
                y_value.GetTensorMutableData<float>(), runner, options);
  } else {
    auto* y = static_cast<Half*>(y_value.GetTensorMutableRawData());
    DequantGemm(args.b, a, args.m, static_cast<const Half*>(args.bias), y, runner, options);
  }
}

OrtStatusPtr AdpQMatMulOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info,
                                          void** kernel) const {
  *kernel = nullptr;
  return StatusFromExceptions(api, [&] {
    const MatMulAttrs attrs = MatMulAttrs::FromKernelInfo(api, info);
    const int64_t level = AccuracyLevel(api, info);
    *kernel = new AdpQMatMulKernel(attrs, level == kAccuracyInt8, OutliersAreConstant(info));
  });
}

const char* AdpQMatMulOp::GetName() const { return kAdpqMatMulName; }

size_t AdpQMatMulOp::GetInputTypeCount() const { return kNumInputs; }

ONNXTensorElementDataType AdpQMatMulOp::GetInputType(size_t index) const {
  switch (index) {
    case kInputCodes:
    case kInputZeroPoints: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case kInputScales:
    case kInputOutlierScale: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case kInputOutlierPtr: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case kInputOutlierIdx: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16;
    case kInputOutlierVal: return outlier_val_type_;
    case kInputBias: return bias_type_;
    default: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;  // A: any type, checked at run
  }
}

OrtCustomOpInputOutputCharacteristic AdpQMatMulOp::GetInputCharacteristic(size_t index) const {
  return index == kInputBias || index == kInputOutlierScale ? INPUT_OUTPUT_OPTIONAL
                                                            : INPUT_OUTPUT_REQUIRED;
}

void RegisterOps(const OrtApi& api, OrtCustomOpDomain* domain) {
  constexpr auto kF32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  constexpr auto kF16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  constexpr auto kI8 = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
  static AdpQMatMulOp ops[] = {{kF32, kF16}, {kF16, kF16}, {kF32, kI8}, {kF16, kI8}};
  for (AdpQMatMulOp& op : ops) Ort::ThrowOnError(api.CustomOpDomain_Add(domain, &op));
}

}  // namespace adpq::cpu

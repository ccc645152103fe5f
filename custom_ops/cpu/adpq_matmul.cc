#include "cpu/adpq_matmul.h"

#include <algorithm>
#include <vector>

#include "adpq/format.h"
#include "adpq/half.h"
#include "common/error.h"
#include "common/op_schema.h"
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

// Which inputs come from initializers.
ConstantInputs ConstantInputsOf(const OrtKernelInfo* info) {
  const Ort::ConstKernelInfo ki(info);
  ConstantInputs constant{};
  const size_t count = ki.GetInputCount();
  for (size_t index = 0; index < constant.size() && index < count; ++index) {
    int is_constant = 0;
    ki.GetTensorConstantInput(index, &is_constant);
    constant[index] = is_constant != 0;
  }
  return constant;
}

// The data pointer of every input (null: absent), without reading types and shapes.
std::array<const void*, kNumInputs> InputPointersOf(const Ort::KernelContext& ctx) {
  std::array<const void*, kNumInputs> p{};
  const size_t count = ctx.GetInputCount();
  for (size_t i = 0; i < p.size() && i < count; ++i) {
    const Ort::ConstValue v = ctx.GetInput(i);
    if (static_cast<const OrtValue*>(v) != nullptr) p[i] = v.GetTensorRawData();
  }
  return p;
}

}  // namespace

OrtStatusPtr AdpQMatMulKernel::ComputeV2(OrtKernelContext* context) {
  return StatusFromExceptions(Ort::GetApi(), [&] { Compute(context); });
}

// From the cache of checked constant inputs when it holds this run's B: only A is read and
// checked (its type must be the cached run's, which the bias was checked against).
bool AdpQMatMulKernel::ReadCached(const Ort::KernelContext& ctx, MatMulArgs& args) const {
  if (!cached_.load(std::memory_order_acquire)) return false;
  const InputPointers p = InputPointersOf(ctx);
  for (size_t i = kInputA + 1; i < p.size(); ++i) {
    if (p[i] != cached_pointers_[i]) return false;
  }
  const Ort::ConstValue a = ctx.GetInput(kInputA);
  const auto info = a.GetTensorTypeAndShapeInfo();
  if (info.GetElementType() != cached_args_.type) return false;  // ReadArgs says why
  args.a_shape = info.GetShape();
  if (args.a_shape.empty() || args.a_shape.back() != attrs_.k) return false;
  args.type = cached_args_.type;
  args.a = p[kInputA];
  args.m = 1;
  for (size_t i = 0; i + 1 < args.a_shape.size(); ++i) args.m *= args.a_shape[i];
  args.y_shape = args.a_shape;
  args.y_shape.back() = attrs_.n;
  args.b = cached_args_.b;
  args.bias = cached_args_.bias;
  return true;
}

void AdpQMatMulKernel::Remember(const Ort::KernelContext& ctx, const MatMulArgs& args) {
  const InputPointers p = InputPointersOf(ctx);
  for (size_t i = kInputA + 1; i < p.size(); ++i) {
    if (p[i] != nullptr && !constant_[i]) return;  // a graph input can change between runs
  }
  const std::lock_guard<std::mutex> lock(cache_mutex_);
  if (cached_.load(std::memory_order_relaxed)) return;
  cached_pointers_ = p;
  cached_args_.type = args.type;
  cached_args_.b = args.b;
  cached_args_.bias = args.bias;
  cached_.store(true, std::memory_order_release);
}

void AdpQMatMulKernel::Compute(OrtKernelContext* context) {
  Ort::KernelContext ctx(context);
  MatMulArgs args;
  if (!ReadCached(ctx, args)) {
    const bool constant_outliers = constant_[kInputOutlierPtr] && constant_[kInputOutlierIdx];
    const bool check_csr = !(constant_outliers && csr_checked_.load(std::memory_order_relaxed));
    args = ReadArgs(ctx, attrs_, check_csr);
    if (constant_outliers) csr_checked_.store(true, std::memory_order_relaxed);
    Remember(ctx, args);
  }
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
    *kernel = new AdpQMatMulKernel(attrs, level == kAccuracyInt8, ConstantInputsOf(info));
  });
}

const char* AdpQMatMulOp::GetName() const { return kAdpqMatMulName; }

size_t AdpQMatMulOp::GetInputTypeCount() const { return kNumInputs; }

ONNXTensorElementDataType AdpQMatMulOp::GetInputType(size_t index) const {
  return InputType(index, bias_type_, outlier_val_type_);  // the schema all providers share
}

OrtCustomOpInputOutputCharacteristic AdpQMatMulOp::GetInputCharacteristic(size_t index) const {
  return InputCharacteristic(index);
}

void RegisterOps(const OrtApi& api, OrtCustomOpDomain* domain) {
  constexpr auto kF32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  constexpr auto kF16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  constexpr auto kI8 = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
  static AdpQMatMulOp ops[] = {{kF32, kF16}, {kF16, kF16}, {kF32, kI8}, {kF16, kI8}};
  for (AdpQMatMulOp& op : ops) Ort::ThrowOnError(api.CustomOpDomain_Add(domain, &op));
}

}  // namespace adpq::cpu

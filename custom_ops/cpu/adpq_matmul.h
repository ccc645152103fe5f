// The CPU AdpQMatMul op (schema for ORT) and its kernel (validate, then launch the compute).
//
//   Y[..., N] = A[..., K] · B[K, N] (+ bias),  B the packed AdpQ weight (include/adpq/format.h)
//
// A, bias and Y are float32 or float16, outlier_val float16 or int8. ORT lets an op declare
// one input of UNDEFINED (any) type whose runtime type its UNDEFINED output takes; a user
// shape-inference function instead would be handed a null input type (ORT 1.31) when an
// optional input in the middle (bias) is absent.
// So A is that one UNDEFINED input (Y gets its type; the kernel checks it), and the op is
// registered 4 times under one name, one per (bias type, outlier_val type): ORT merges them
// into one schema. bias and outlier_scale are optional inputs. All 4 share one kernel, which
// checks every type itself.
//
// Optional attribute accuracy_level (int, default 0), as in ORT's MatMulNBits: 4 quantizes A to
// int8 per group of B on the fly (faster, slightly less accurate: cpu/kernels.h); 0-3 compute
// in float32.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <array>
#include <atomic>
#include <mutex>

#include "common/matmul_args.h"

namespace adpq::cpu {

// Which inputs are initializers (constant between runs), by input index.
using ConstantInputs = std::array<bool, kNumInputs>;

class AdpQMatMulKernel {
 public:
  AdpQMatMulKernel(const MatMulAttrs& attrs, bool int8_activations, const ConstantInputs& constant)
      : attrs_(attrs), int8_activations_(int8_activations), constant_(constant) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  using InputPointers = std::array<const void*, kNumInputs>;
  void Compute(OrtKernelContext* context);
  bool ReadCached(const Ort::KernelContext& ctx, MatMulArgs& args) const;
  void Remember(const Ort::KernelContext& ctx, const MatMulArgs& args);

  MatMulAttrs attrs_;
  bool int8_activations_;  // attribute accuracy_level = 4
  ConstantInputs constant_;
  // Set once the constant outlier table passed CheckCsr: a walk over every outlier that is
  // worth ~5 % of a decode step, and constant tensors cannot change between runs.
  std::atomic<bool> csr_checked_{false};
  // The checked B (and bias) of the first run, when every input but A is an initializer or
  // absent: later runs whose input pointers are the same skip reading and checking them (a
  // dozen ORT calls and allocations per input, ~1 us per run: a fifth of a small decode
  // MatMul). Written once, under the mutex, before `cached_` is set.
  std::mutex cache_mutex_;
  std::atomic<bool> cached_{false};
  InputPointers cached_pointers_{};
  MatMulArgs cached_args_;
};

struct AdpQMatMulOp : Ort::CustomOpBase<AdpQMatMulOp, AdpQMatMulKernel, /*WithStatus=*/true> {
  AdpQMatMulOp(ONNXTensorElementDataType bias_type, ONNXTensorElementDataType outlier_val_type)
      : bias_type_(bias_type), outlier_val_type_(outlier_val_type) {}

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const;
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }

  size_t GetInputTypeCount() const;
  ONNXTensorElementDataType GetInputType(size_t index) const;
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const;

  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t /*index*/) const {
    return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;  // A's type
  }

 private:
  ONNXTensorElementDataType bias_type_;
  ONNXTensorElementDataType outlier_val_type_;
};

}  // namespace adpq::cpu

// The CUDA AdpQMatMul op (schema for ORT's CUDAExecutionProvider) and its kernel: validate on
// the host, then launch on ORT's compute stream (adpq_matmul_impl.cuh).
//
// Same name, domain, inputs and optional inputs as the CPU op (common/op_schema.h), so ORT
// merges both into one schema and assigns a node to whichever provider the session lists
// first. Types: A (and bias, Y) float32, float16 or bfloat16; outlier_val float16 or int8. So
// the op is registered six times, once per (bias type, outlier_val type). The attribute
// accuracy_level (a CPU speed hint) is accepted and ignored: the CUDA kernels always multiply
// in T and accumulate in fp32.
//
// All inputs live in device memory. The CSR table is checked (common CheckCsr) on a host copy:
// once per kernel when outlier_ptr and outlier_idx are initializers, at every run otherwise
// (a synchronizing copy; weights fed at run time are for tests).
//
// Registration calls no CUDA function, so the library loads and registers on machines
// without a GPU or driver (the CPU op then serves every node).
#pragma once

#include <onnxruntime_cxx_api.h>

#include <atomic>

#include "common/matmul_args.h"

namespace adpq::cuda {

class AdpQMatMulKernel {
 public:
  AdpQMatMulKernel(const MatMulAttrs& attrs, bool constant_outliers)
      : attrs_(attrs), constant_outliers_(constant_outliers) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  void Compute(OrtKernelContext* context);
  MatMulAttrs attrs_;
  bool constant_outliers_;  // outlier_ptr and outlier_idx are initializers
  std::atomic<bool> csr_checked_{false};
};

struct AdpQMatMulOp : Ort::CustomOpBase<AdpQMatMulOp, AdpQMatMulKernel, /*WithStatus=*/true> {
  AdpQMatMulOp(ONNXTensorElementDataType bias_type, ONNXTensorElementDataType outlier_val_type)
      : bias_type_(bias_type), outlier_val_type_(outlier_val_type) {}

  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const;
  const char* GetExecutionProviderType() const { return "CUDAExecutionProvider"; }

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

}  // namespace adpq::cuda

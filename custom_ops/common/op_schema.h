// The AdpQMatMul schema as every provider's OrtCustomOp declares it. ORT merges all custom ops
// of one name, whatever their provider, into one ONNX schema and requires them to agree on the
// number of inputs and outputs and on which are optional; only the types may differ. So each
// provider registers one op per (bias type, outlier_val type) and takes these from here.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <cstddef>
#include <initializer_list>

#include "adpq/format.h"

namespace adpq {

// A is the op's one input of undefined ("any") type: Y takes its type, and the kernel checks
// it at run time (common/matmul_args.h).
inline ONNXTensorElementDataType InputType(size_t index, ONNXTensorElementDataType bias_type,
                                           ONNXTensorElementDataType outlier_val_type) {
  switch (index) {
    case kInputCodes:
    case kInputZeroPoints: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;
    case kInputScales:
    case kInputOutlierScale: return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
    case kInputOutlierPtr: return ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32;
    case kInputOutlierIdx: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16;
    case kInputOutlierVal: return outlier_val_type;
    case kInputBias: return bias_type;
    default: return ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
}

inline OrtCustomOpInputOutputCharacteristic InputCharacteristic(size_t index) {
  return index == kInputBias || index == kInputOutlierScale ? INPUT_OUTPUT_OPTIONAL
                                                            : INPUT_OUTPUT_REQUIRED;
}

// True when every listed input comes from an initializer (constant for the session's life).
inline bool InputsAreConstant(const OrtKernelInfo* info, std::initializer_list<size_t> inputs) {
  const Ort::ConstKernelInfo ki(info);
  for (size_t index : inputs) {
    int is_constant = 0;
    ki.GetTensorConstantInput(index, &is_constant);
    if (!is_constant) return false;
  }
  return true;
}

}  // namespace adpq

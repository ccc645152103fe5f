// Host-side reading and validation of an AdpQMatMul node, shared by every execution provider:
// attributes once per kernel, input shapes and dtypes on every run. "Host code validates;
// device code computes": kernels receive only checked pointers and sizes.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <vector>

#include "adpq/format.h"
#include "adpq/half.h"

namespace adpq {

// The node's attributes (ORT MatMulNBits names), validated.
struct MatMulAttrs {
  int64_t k = 0;
  int64_t n = 0;
  int bits = 0;
  int64_t group_size = 0;  // attribute block_size

  // Reads and validates K, N, bits, block_size (and a 3-bit node's packing); throws
  // InvalidArgument.
  static MatMulAttrs FromKernelInfo(const OrtApi& api, const OrtKernelInfo* info);
};

// The packed B of one node: pointers into the input tensors plus their sizes.
struct PackedB {
  int64_t k = 0;
  int64_t n = 0;
  int bits = 0;
  int64_t group_size = 0;
  int64_t n_groups = 0;
  int64_t row_bytes = 0;                  // bytes per row of codes
  const uint8_t* codes = nullptr;         // [N, row_bytes]
  const Half* scales = nullptr;           // [N, n_groups]
  const uint8_t* zeros = nullptr;         // [N, n_groups]
  const int32_t* outlier_ptr = nullptr;   // [N + 1]
  const uint16_t* outlier_idx = nullptr;  // [nnz]
  const void* outlier_val = nullptr;      // Half or int8_t [nnz]
  bool outlier_int8 = false;
  const Half* outlier_scale = nullptr;  // [N] iff outlier_int8
  int64_t nnz = 0;
};

// Every input of one run, checked against the attributes.
struct MatMulArgs {
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;  // of A, bias, Y
  const void* a = nullptr;
  std::vector<int64_t> a_shape;
  int64_t m = 0;  // product of A's leading dimensions
  PackedB b;
  const void* bias = nullptr;  // [N] or null
  std::vector<int64_t> y_shape;
};

// How a provider's kernel reads its inputs.
struct ReadOptions {
  // Walk the CSR table (CheckCsr). It reads outlier_ptr and outlier_idx, so they must then be
  // in host memory; a device kernel passes false and checks a host copy itself.
  bool check_csr = true;
  // Accept bfloat16 A (and so bias and Y): the CUDA kernel computes in it, the CPU one does not.
  bool allow_bfloat16 = false;
};

// Reads the inputs, checks every shape and dtype against the attributes and the CSR structure
// (outlier_ptr starts at 0, never decreases, ends at nnz; every outlier_idx < K). Throws
// InvalidArgument naming the input and dimension. Reads no tensor data except in the CSR check.
MatMulArgs ReadArgs(const Ort::KernelContext& ctx, const MatMulAttrs& attrs,
                    const ReadOptions& options);

// The CPU form: float32 or float16 A; check_csr=false skips the O(nnz) walk over the outlier
// table (already checked).
inline MatMulArgs ReadArgs(const Ort::KernelContext& ctx, const MatMulAttrs& attrs,
                           bool check_csr = true) {
  ReadOptions options;
  options.check_csr = check_csr;
  return ReadArgs(ctx, attrs, options);
}

// outlier_ptr[0] == 0, never decreasing, outlier_ptr[N] == nnz; every outlier_idx < K. Reads
// b.outlier_ptr and b.outlier_idx, which must point to host memory. Throws InvalidArgument.
void CheckCsr(const PackedB& b);

}  // namespace adpq

#include "common/matmul_args.h"

#include <string>

#include "common/error.h"

namespace adpq {
namespace {

const char* TypeName(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: return "float64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8: return "int8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: return "int16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16: return "uint16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32: return "int32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32: return "uint32";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    default: return "an unsupported type";
  }
}

struct Tensor {
  const char* name = "";
  const void* data = nullptr;
  ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  std::vector<int64_t> shape;
  bool present = false;
};

Tensor ReadInput(const Ort::KernelContext& ctx, size_t index, const char* name) {
  Tensor t;
  t.name = name;
  if (index >= ctx.GetInputCount()) return t;
  Ort::ConstValue v = ctx.GetInput(index);
  if (static_cast<const OrtValue*>(v) == nullptr) return t;  // absent optional input
  if (!v.IsTensor()) Fail(name, " must be a tensor");
  auto info = v.GetTensorTypeAndShapeInfo();
  t.type = info.GetElementType();
  t.shape = info.GetShape();
  t.data = v.GetTensorRawData();
  t.present = true;
  return t;
}

void ExpectType(const Tensor& t, ONNXTensorElementDataType want) {
  if (t.type != want) Fail(t.name, " must be ", TypeName(want), ", got ", TypeName(t.type));
}

// `why` names the attributes that fix the expected shape, e.g. "K=64, N=4, bits=3 need".
void ExpectShape(const Tensor& t, const std::vector<int64_t>& want, const std::string& why) {
  if (t.shape != want) {
    Fail(t.name, " has shape ", ShapeString(t.shape), " but ", why, " ", ShapeString(want));
  }
}

int64_t ReadIntAttr(const OrtApi& api, const OrtKernelInfo* info, const char* name) {
  int64_t v = 0;
  if (OrtStatus* st = api.KernelInfoGetAttribute_int64(info, name, &v)) {
    api.ReleaseStatus(st);
    Fail("attribute ", name, " (int) is missing");
  }
  return v;
}

}  // namespace

void CheckCsr(const PackedB& b) {
  const int32_t* ptr = b.outlier_ptr;
  if (ptr[0] != 0) Fail("outlier_ptr[0]=", ptr[0], " but the CSR row pointers must start at 0");
  for (int64_t n = 0; n < b.n; ++n) {
    if (ptr[n + 1] < ptr[n]) {
      Fail("outlier_ptr is not monotone: outlier_ptr[", n, "]=", ptr[n], " > outlier_ptr[", n + 1,
           "]=", ptr[n + 1]);
    }
  }
  if (ptr[b.n] != b.nnz) {
    Fail("outlier_ptr[N=", b.n, "]=", ptr[b.n], " but outlier_idx and outlier_val hold nnz=", b.nnz,
         " entries");
  }
  for (int64_t n = 0; n < b.n; ++n) {
    for (int64_t i = ptr[n]; i < ptr[n + 1]; ++i) {
      if (b.outlier_idx[i] >= b.k) {
        Fail("outlier_idx[", i, "]=", b.outlier_idx[i], " (row ", n,
             ") is out of range for K=", b.k);
      }
    }
  }
}

MatMulAttrs MatMulAttrs::FromKernelInfo(const OrtApi& api, const OrtKernelInfo* info) {
  MatMulAttrs a;
  a.k = ReadIntAttr(api, info, "K");
  a.n = ReadIntAttr(api, info, "N");
  const int64_t bits = ReadIntAttr(api, info, "bits");
  a.group_size = ReadIntAttr(api, info, "block_size");
  if (a.k < 1) Fail("attribute K=", a.k, " must be >= 1");
  if (a.n < 1) Fail("attribute N=", a.n, " must be >= 1");
  if (!IsSupportedBits(bits)) Fail("attribute bits=", bits, " must be 2, 3, 4 or 8");
  a.bits = static_cast<int>(bits);
  if (bits == 3) {
    int64_t packing = 0;
    if (OrtStatus* st = api.KernelInfoGetAttribute_int64(info, "packing", &packing)) {
      api.ReleaseStatus(st);
    }
    if (packing != kPacking3) {
      Fail("3-bit codes without attribute packing=", kPacking3,
           " are in the per-block layout of adpq-onnx 0.1, which this library no longer reads; "
           "quantize the float model again with adpq-onnx optimize");
    }
  }
  if (!IsSupportedGroupSize(a.group_size)) {
    Fail("attribute block_size=", a.group_size, " must be a multiple of ", kBlock, " in [",
         kMinGroupSize, ", ", kMaxGroupSize, "]");
  }
  return a;
}

MatMulArgs ReadArgs(const Ort::KernelContext& ctx, const MatMulAttrs& at,
                    const ReadOptions& options) {
  const std::string kn = "K=" + std::to_string(at.k) + ", N=" + std::to_string(at.n);
  MatMulArgs args;
  PackedB& b = args.b;
  b.k = at.k;
  b.n = at.n;
  b.bits = at.bits;
  b.group_size = at.group_size;
  b.n_groups = NumGroups(at.k, at.group_size);
  b.row_bytes = PackedRowBytes(at.k, at.bits);

  const Tensor a = ReadInput(ctx, kInputA, "A");
  const bool bf16 = a.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
  if (a.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT &&
      a.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 && !(bf16 && options.allow_bfloat16)) {
    Fail("A must be float32 or float16", options.allow_bfloat16 ? " or bfloat16" : "", ", got ",
         TypeName(a.type));
  }
  if (a.shape.empty()) Fail("A must have at least 1 dimension [..., K], got a scalar");
  if (a.shape.back() != at.k) {
    Fail("A has K=", a.shape.back(), " at its last dimension but attribute K=", at.k);
  }
  args.type = a.type;
  args.a = a.data;
  args.a_shape = a.shape;
  args.m = 1;
  for (size_t i = 0; i + 1 < a.shape.size(); ++i) args.m *= a.shape[i];
  args.y_shape = a.shape;
  args.y_shape.back() = at.n;

  const Tensor codes = ReadInput(ctx, kInputCodes, "codes");
  ExpectType(codes, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
  ExpectShape(codes, {at.n, b.row_bytes}, kn + ", bits=" + std::to_string(at.bits) + " need");
  b.codes = static_cast<const uint8_t*>(codes.data);

  const std::string groups = kn + ", block_size=" + std::to_string(at.group_size) + " need";
  const Tensor scales = ReadInput(ctx, kInputScales, "scales");
  ExpectType(scales, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16);
  ExpectShape(scales, {at.n, b.n_groups}, groups);
  b.scales = static_cast<const Half*>(scales.data);

  const Tensor zeros = ReadInput(ctx, kInputZeroPoints, "zero_points");
  ExpectType(zeros, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
  ExpectShape(zeros, {at.n, b.n_groups}, groups);
  b.zeros = static_cast<const uint8_t*>(zeros.data);

  const Tensor ptr = ReadInput(ctx, kInputOutlierPtr, "outlier_ptr");
  ExpectType(ptr, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32);
  ExpectShape(ptr, {at.n + 1}, "N=" + std::to_string(at.n) + " needs [N + 1] =");
  b.outlier_ptr = static_cast<const int32_t*>(ptr.data);

  const Tensor idx = ReadInput(ctx, kInputOutlierIdx, "outlier_idx");
  ExpectType(idx, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16);
  if (idx.shape.size() != 1) Fail("outlier_idx must be 1-D [nnz], got ", ShapeString(idx.shape));
  b.nnz = idx.shape[0];
  b.outlier_idx = static_cast<const uint16_t*>(idx.data);

  const Tensor val = ReadInput(ctx, kInputOutlierVal, "outlier_val");
  if (val.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16 &&
      val.type != ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8) {
    Fail("outlier_val must be float16 or int8, got ", TypeName(val.type));
  }
  ExpectShape(val, {b.nnz}, "outlier_idx's nnz=" + std::to_string(b.nnz) + " needs");
  b.outlier_val = val.data;
  b.outlier_int8 = val.type == ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;

  const Tensor bias = ReadInput(ctx, kInputBias, "bias");
  if (bias.present) {
    if (bias.type != a.type) {
      Fail("bias must have A's type ", TypeName(a.type), ", got ", TypeName(bias.type));
    }
    ExpectShape(bias, {at.n}, "N=" + std::to_string(at.n) + " needs");
    args.bias = bias.data;
  }

  const Tensor oscale = ReadInput(ctx, kInputOutlierScale, "outlier_scale");
  if (b.outlier_int8 && !oscale.present) {
    Fail("outlier_val is int8 but outlier_scale (input 8, float16 [N]) is missing");
  }
  if (!b.outlier_int8 && oscale.present) {
    Fail("outlier_scale is given but outlier_val is float16; it goes only with int8 values");
  }
  if (oscale.present) {
    ExpectType(oscale, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16);
    ExpectShape(oscale, {at.n}, "N=" + std::to_string(at.n) + " needs");
    b.outlier_scale = static_cast<const Half*>(oscale.data);
  }

  if (options.check_csr) CheckCsr(b);
  return args;
}

}  // namespace adpq

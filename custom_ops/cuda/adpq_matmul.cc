#include "cuda/adpq_matmul.h"

#include <cuda_runtime_api.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "adpq/format.h"
#include "common/error.h"
#include "common/op_schema.h"
#include "cuda/adpq_matmul_impl.cuh"
#include "cuda/register.h"

namespace adpq::cuda {
namespace {

// A CUDA error becomes an exception (ORT_FAIL) that says what failed.
void Check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("AdpQMatMul (CUDA): ") + what + ": " +
                             cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
  }
}

// Largest M that the GEMV kernel takes when the choice is automatic. An estimate, not a
// measurement: the GEMV's cost grows by about one FMA per code per row of A, the tensor-core
// kernel's hardly at all, and they should cross near 8 rows on an H100. ADPQ_CUDA_GEMV_MAX_M
// overrides it (read at every run), so that a GPU session can find the crossover.
constexpr int64_t kDefaultGemvMaxM = 8;

enum class Variant { kAuto, kGemv, kMma };

// ADPQ_CUDA_KERNEL=gemv|mma forces one kernel (the tests run every case through both; float32
// A always takes the GEMV); anything else means automatic. Read at every run, like
// ADPQ_CPU_KERNEL.
Variant VariantFromEnv() {
  const char* v = std::getenv("ADPQ_CUDA_KERNEL");
  if (v == nullptr) return Variant::kAuto;
  if (std::strcmp(v, "gemv") == 0) return Variant::kGemv;
  if (std::strcmp(v, "mma") == 0) return Variant::kMma;
  return Variant::kAuto;
}

int64_t GemvMaxM() {
  const char* v = std::getenv("ADPQ_CUDA_GEMV_MAX_M");
  if (v == nullptr || *v == '\0') return kDefaultGemvMaxM;
  char* end = nullptr;
  const long long m = std::strtoll(v, &end, 10);
  return end != v && m >= 0 ? static_cast<int64_t>(m) : kDefaultGemvMaxM;
}

struct DeviceInfo {
  int sm_count = 0;
  int major = 0;
  int minor = 0;
};

// Properties of a device, queried on its first run (never at registration, which must work
// without a driver) and kept for the process.
DeviceInfo InfoOf(int device) {
  static std::mutex mutex;
  static std::vector<DeviceInfo> infos;
  std::lock_guard<std::mutex> lock(mutex);
  if (static_cast<size_t>(device) >= infos.size()) infos.resize(static_cast<size_t>(device) + 1);
  DeviceInfo& info = infos[static_cast<size_t>(device)];
  if (info.sm_count == 0) {
    Check(cudaDeviceGetAttribute(&info.major, cudaDevAttrComputeCapabilityMajor, device),
          "reading the compute capability");
    Check(cudaDeviceGetAttribute(&info.minor, cudaDevAttrComputeCapabilityMinor, device),
          "reading the compute capability");
    Check(cudaDeviceGetAttribute(&info.sm_count, cudaDevAttrMultiProcessorCount, device),
          "reading the multiprocessor count");
  }
  return info;
}

// Copies outlier_ptr and outlier_idx to the host and runs the common CSR check on them; waits
// for the stream.
void CheckCsrOnHost(const PackedB& b, cudaStream_t stream) {
  // ORT runs a session normally at least once before it captures a CUDA graph, so a constant
  // table is checked before any capture; a table fed at run time cannot be (no waiting inside a
  // capture), and the kernels rely on the check.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  Check(cudaStreamIsCapturing(stream, &capture), "querying stream capture");
  if (capture != cudaStreamCaptureStatusNone) {
    Fail(
        "outlier_ptr and outlier_idx are not initializers, so they are checked at every run, "
        "which cannot happen inside a CUDA graph capture; make them initializers");
  }
  std::vector<int32_t> ptr(static_cast<size_t>(b.n + 1));
  std::vector<uint16_t> idx(static_cast<size_t>(b.nnz));
  Check(cudaMemcpyAsync(ptr.data(), b.outlier_ptr, ptr.size() * sizeof(int32_t),
                        cudaMemcpyDeviceToHost, stream),
        "copying outlier_ptr to the host");
  if (!idx.empty()) {
    Check(cudaMemcpyAsync(idx.data(), b.outlier_idx, idx.size() * sizeof(uint16_t),
                          cudaMemcpyDeviceToHost, stream),
          "copying outlier_idx to the host");
  }
  Check(cudaStreamSynchronize(stream), "waiting for the outlier table");
  PackedB host = b;
  host.outlier_ptr = ptr.data();
  host.outlier_idx = idx.data();
  CheckCsr(host);
}

// Device scratch from ORT's allocator for A's memory (the EP's arena). It is freed when the
// launch has only been queued: like ORT's own CUDA kernels' scratch buffers, the memory can
// only be handed out again to work queued later on the same stream.
class Scratch {
 public:
  Scratch(const Ort::KernelContext& ctx, const OrtMemoryInfo& info, size_t bytes) {
    if (bytes == 0) return;
    allocator_ = ctx.GetAllocator(info);
    if (allocator_ == nullptr) {
      throw std::runtime_error("AdpQMatMul (CUDA): no device allocator for the workspace");
    }
    ptr_ = allocator_->Alloc(allocator_, bytes);
    if (ptr_ == nullptr) throw std::bad_alloc();
  }
  ~Scratch() {
    if (ptr_ != nullptr) allocator_->Free(allocator_, ptr_);
    if (allocator_ != nullptr) Ort::GetApi().ReleaseAllocator(allocator_);
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  void* get() const { return ptr_; }

 private:
  OrtAllocator* allocator_ = nullptr;
  void* ptr_ = nullptr;
};

ElemType ElemTypeOf(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return ElemType::kFloat32;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return ElemType::kFloat16;
    default: return ElemType::kBFloat16;  // ReadArgs admits nothing else
  }
}

}  // namespace

OrtStatusPtr AdpQMatMulKernel::ComputeV2(OrtKernelContext* context) {
  return StatusFromExceptions(Ort::GetApi(), [&] { Compute(context); });
}

void AdpQMatMulKernel::Compute(OrtKernelContext* context) {
  Ort::KernelContext ctx(context);
  ReadOptions options;
  options.check_csr = false;  // the table is in device memory: checked below on a host copy
  options.allow_bfloat16 = true;
  const MatMulArgs args = ReadArgs(ctx, attrs_, options);
  Ort::UnownedValue y_value = ctx.GetOutput(0, args.y_shape);
  if (args.m == 0) return;  // empty leading dimension: an empty Y

  auto stream = static_cast<cudaStream_t>(ctx.GetGPUComputeStream());
  if (stream == nullptr) {
    throw std::runtime_error("AdpQMatMul (CUDA): ORT gave no GPU compute stream");
  }
  // Run on the device that holds the tensors. ORT normally has it current already; another
  // CUDA runtime than ORT's (this library links its own, statically) shares the driver's
  // per-thread current context, so this is just a check.
  const Ort::ConstMemoryInfo memory = ctx.GetInput(kInputA).GetTensorMemoryInfo();
  const int device = memory.GetDeviceId();
  int current = -1;
  Check(cudaGetDevice(&current), "reading the current device");
  if (current != device) Check(cudaSetDevice(device), "selecting the tensors' device");
  const DeviceInfo info = InfoOf(device);
  if (info.major < 8) {
    Fail("the CUDA kernels need compute capability 8.0 or newer (sm_80+); device ", device, " is ",
         info.major, ".", info.minor);
  }

  const PackedB& b = args.b;
  if (reinterpret_cast<uintptr_t>(b.codes) % 16 != 0) {
    Fail("codes must be 16-byte aligned in device memory for the CUDA kernels");
  }
  if (!(constant_outliers_ && csr_checked_.load(std::memory_order_relaxed))) {
    CheckCsrOnHost(b, stream);
    if (constant_outliers_) csr_checked_.store(true, std::memory_order_relaxed);
  }

  LaunchArgs la;
  la.type = ElemTypeOf(args.type);
  la.a = args.a;
  la.y = y_value.GetTensorMutableRawData();
  la.bias = args.bias;
  la.m = args.m;
  la.k = b.k;
  la.n = b.n;
  la.bits = b.bits;
  la.group_size = b.group_size;
  la.n_groups = b.n_groups;
  la.row_bytes = b.row_bytes;
  la.n_blocks = PaddedK(b.k) / kBlock;
  la.codes = b.codes;
  la.scales = b.scales;
  la.zeros = b.zeros;
  la.outlier_ptr = b.outlier_ptr;
  la.outlier_idx = b.outlier_idx;
  la.outlier_val = b.outlier_val;
  la.outlier_int8 = b.outlier_int8;
  la.outlier_scale = b.outlier_scale;
  la.sm_count = info.sm_count;

  const Variant variant = VariantFromEnv();
  const bool mma = la.type != ElemType::kFloat32 &&
                   (variant == Variant::kMma || (variant == Variant::kAuto && la.m > GemvMaxM()));
  if (mma) {
    const Scratch workspace(ctx, *static_cast<const OrtMemoryInfo*>(memory), MmaWorkspaceBytes(la));
    Check(LaunchMma(la, workspace.get(), stream), "launching the tensor-core kernel");
  } else {
    Check(LaunchGemv(la, stream), "launching the GEMV kernel");
  }
}

OrtStatusPtr AdpQMatMulOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info,
                                          void** kernel) const {
  *kernel = nullptr;
  return StatusFromExceptions(api, [&] {
    const MatMulAttrs attrs = MatMulAttrs::FromKernelInfo(api, info);
    const bool constant = InputsAreConstant(
        info, {static_cast<size_t>(kInputOutlierPtr), static_cast<size_t>(kInputOutlierIdx)});
    *kernel = new AdpQMatMulKernel(attrs, constant);
  });
}

const char* AdpQMatMulOp::GetName() const { return kAdpqMatMulName; }

size_t AdpQMatMulOp::GetInputTypeCount() const { return kNumInputs; }

ONNXTensorElementDataType AdpQMatMulOp::GetInputType(size_t index) const {
  return InputType(index, bias_type_, outlier_val_type_);
}

OrtCustomOpInputOutputCharacteristic AdpQMatMulOp::GetInputCharacteristic(size_t index) const {
  return InputCharacteristic(index);
}

void RegisterOps(const OrtApi& api, OrtCustomOpDomain* domain) {
  constexpr auto kF32 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  constexpr auto kF16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  constexpr auto kBF16 = ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16;
  constexpr auto kI8 = ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8;
  // Static: ORT keeps pointers to the ops for as long as sessions use the domain.
  static AdpQMatMulOp ops[] = {{kF32, kF16}, {kF16, kF16}, {kBF16, kF16},
                               {kF32, kI8},  {kF16, kI8},  {kBF16, kI8}};
  for (AdpQMatMulOp& op : ops) Ort::ThrowOnError(api.CustomOpDomain_Add(domain, &op));
}

}  // namespace adpq::cuda

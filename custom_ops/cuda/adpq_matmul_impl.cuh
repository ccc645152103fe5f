// Launchers of the CUDA AdpQMatMul kernels (gemv.cu, mma.cu), called by the host op
// (adpq_matmul.cc) after it has validated every input. Plain C++: no CUDA C++ constructs, so
// the host file compiles with the C++ compiler.
//
//   Y[m, n] = sum_k A[m, k] * B[k, n] (+ bias[n]),   B the packed AdpQ weight (format.h)
//
// Two kernels, both fp32-accumulating and both adding the outliers from the CSR rows:
//
//   GEMV  (gemv.cu)  decode, M <= ~8. One warp owns kGemvCols output channels and streams their
//         packed rows once, its 32 lanes taking consecutive blocks of 32 codes (coalesced 8-16
//         byte loads); codes are unpacked in registers (unpack.cuh) and multiplied with A read
//         through L1; each lane adds a strided share of the row's outliers before the warp
//         reduction. Rows of A are taken kGemvRows at a time (blockIdx.y), so any M works: it is
//         also the float32 path, and the fallback for every case.
//   MMA   (mma.cu)   prefill, float16/bfloat16 A with larger M. A thread block computes a
//         BM x 128 tile of Y with tensor cores (WMMA 16x16x16, fp32 accumulators): A tiles come
//         in by cp.async, B tiles are dequantized from the packed codes straight into shared
//         memory (the outliers of the tile added there, so B is dense + sparse before the
//         product), two stages deep. When the tiles alone would leave SMs idle, K is split
//         across thread blocks that add into an fp32 workspace, and a last kernel adds bias and
//         converts.
//
// Untested on a GPU so far (no GPU was available when this was written): see docs/CUDA.md.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace adpq::cuda {

enum class ElemType { kFloat32, kFloat16, kBFloat16 };

// Device pointers and sizes of one validated run; A, bias and Y have type `type`.
struct LaunchArgs {
  ElemType type = ElemType::kFloat16;
  const void* a = nullptr;     // [m, k]
  void* y = nullptr;           // [m, n]
  const void* bias = nullptr;  // [n] or null
  int64_t m = 0;
  int64_t k = 0;
  int64_t n = 0;
  int bits = 0;
  int64_t group_size = 0;
  int64_t n_groups = 0;
  int64_t row_bytes = 0;
  int64_t n_blocks = 0;                   // PaddedK(k) / 32
  const uint8_t* codes = nullptr;         // [n, row_bytes]
  const uint16_t* scales = nullptr;       // float16 bits [n, n_groups]
  const uint8_t* zeros = nullptr;         // [n, n_groups]
  const int32_t* outlier_ptr = nullptr;   // [n + 1], checked on the host
  const uint16_t* outlier_idx = nullptr;  // [nnz]
  const void* outlier_val = nullptr;      // float16 bits or int8 [nnz]
  bool outlier_int8 = false;
  const uint16_t* outlier_scale = nullptr;  // float16 bits [n] iff outlier_int8
  int sm_count = 1;                         // multiprocessors of the device
};

// Rows of A per GEMV thread block (blockIdx.y), output channels per warp, warps per block.
inline constexpr int kGemvRows = 8;
inline constexpr int kGemvCols = 2;
inline constexpr int kGemvWarps = 4;

// Launches the GEMV kernel on `stream`; any m >= 1.
cudaError_t LaunchGemv(const LaunchArgs& args, cudaStream_t stream);

// fp32 workspace the MMA path needs for `args` (0: none), and the launch itself; float16 and
// bfloat16 only. `workspace` holds MmaWorkspaceBytes(args) bytes (or is null when that is 0).
size_t MmaWorkspaceBytes(const LaunchArgs& args);
cudaError_t LaunchMma(const LaunchArgs& args, void* workspace, cudaStream_t stream);

}  // namespace adpq::cuda

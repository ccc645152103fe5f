// Y = A · B (+ bias) for a packed B, on the CPU.
//
// The work is split over tiles of output channels n (rows of the stored B^T) and run on the
// session's intra-op threads. Per call, A is prepared once (float32, zero-padded to a multiple
// of 32; in int8 mode also quantized per group of B, see kernels.h). Per tile:
//   1. the dense part, by the variant that kernels.h's SelectIsa() picks (SIMD kernels that
//      unpack the codes in registers, or the scalar reference);
//   2. the tile's outliers, sparsely: y[m, n] += sum over row n's outliers of x[m, idx] * val
//      (with A transposed once per call when it has many rows, so that this is a vector
//      loop over m);
//   3. bias, and the store (float16 Y goes through a float tile).
#pragma once

#include <cstddef>
#include <cstdint>

#include "adpq/half.h"
#include "common/matmul_args.h"

namespace adpq::cpu {

// Runs fn(data, i) for i in [0, total), possibly in parallel; fn must not throw.
class ParallelRunner {
 public:
  virtual ~ParallelRunner() = default;
  virtual void Run(size_t total, void (*fn)(void*, size_t), void* data) const = 0;
};

struct GemmOptions {
  // Quantize A to int8 per group (accuracy_level 4). Only for 2-, 3- and 4-bit codes; 8-bit
  // codes always run in float.
  bool int8_activations = false;
};

// Y[m, n] = sum_k A[m, k] * B[k, n] (+ bias[n]).
//   a:    float [m, PaddedK(b.k)], zero past K
//   bias: T [b.n] or null
//   y:    T [m, b.n]
// T is float or Half (float16 bits); throws std::bad_alloc if a task could not get scratch.
template <typename T>
void DequantGemm(const PackedB& b, const float* a, int64_t m, const T* bias, T* y,
                 const ParallelRunner& runner, const GemmOptions& options = {});

// float16 -> float32, with F16C when the CPU has it.
void HalfToFloatN(const Half* src, float* dst, int64_t n);

}  // namespace adpq::cpu

// Y = A · B (+ bias) for a packed B, on the CPU.
//
// Work is split over tiles of output channels n (rows of the stored B^T). A task dequantizes
// its tile of rows into a per-thread float scratch (codes -> (code - zero) * scale, then the
// rows' outliers are added), and dots it with every row of A, 4 rows of B at a time so that
// each load of A feeds 4 outputs. Everything accumulates in float32. Rows are padded to a
// multiple of 32 with zeros in both A and the scratch, so the dot products have no tail.
//
// The dequantization is the scalar reference of include/adpq/dequant_ref.h compiled with the
// code width as a constant; a SIMD fast path can replace DequantRowFor() without touching the
// rest.
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

// Y[m, n] = sum_k A[m, k] * B[k, n] (+ bias[n]).
//   a:    float [m, PaddedK(b.k)], zero past K
//   bias: T [b.n] or null
//   y:    T [m, b.n]
// T is float or Half (float16 bits); throws std::bad_alloc if a task could not get scratch.
template <typename T>
void DequantGemm(const PackedB& b, const float* a, int64_t m, const T* bias, T* y,
                 const ParallelRunner& runner);

}  // namespace adpq::cpu

#include "cpu/dequant_gemm.h"

#include <algorithm>
#include <atomic>
#include <new>
#include <vector>

#include "adpq/dequant_ref.h"
#include "adpq/format.h"

namespace adpq::cpu {
namespace {

constexpr int kRows = 4;   // rows of B^T per micro-kernel call (outputs per load of A)
constexpr int kLanes = 8;  // independent partial sums per row: the compiler maps them to SIMD

static_assert(kBlock % kLanes == 0, "padded rows must hold whole lane groups");

using DequantRowFn = void (*)(const uint8_t*, const Half*, const uint8_t*, int64_t, int64_t,
                              float*);

DequantRowFn DequantRowFor(int bits) {
  switch (bits) {
    case 2: return &DequantRowRef<2>;
    case 3: return &DequantRowRef<3>;
    case 4: return &DequantRowRef<4>;
    default: return &DequantRowRef<8>;
  }
}

// out[r] = dot(a, w + r * ld) over len floats (a multiple of kLanes), for r < R. The lane
// accumulators make the reduction order explicit, so the compiler may vectorize it without
// -ffast-math.
template <int R>
inline void DotRows(const float* a, const float* w, int64_t ld, int64_t len, float* out) {
  float acc[R][kLanes] = {};
  for (int64_t k = 0; k < len; k += kLanes) {
    for (int r = 0; r < R; ++r) {
      const float* wr = w + r * ld + k;
      for (int l = 0; l < kLanes; ++l) acc[r][l] += a[k + l] * wr[l];
    }
  }
  for (int r = 0; r < R; ++r) {
    float s = 0.0f;
    for (int l = 0; l < kLanes; ++l) s += acc[r][l];
    out[r] = s;
  }
}

inline float ToFloat(float v) { return v; }
inline float ToFloat(Half v) { return HalfToFloat(v); }
inline void Store(float v, float* y) { *y = v; }
inline void Store(float v, Half* y) { *y = FloatToHalf(v); }

// Bytes of dequantized rows a task aims for: one pass over A per tile, so bigger tiles when A
// has many rows (prefill), small ones (more tasks) for a single row (decode).
int64_t TileRows(int64_t m, int64_t n, int64_t kpad) {
  const int64_t target_bytes = m <= 4 ? (64 << 10) : (512 << 10);
  int64_t rows = target_bytes / (kpad * static_cast<int64_t>(sizeof(float)));
  rows = std::clamp<int64_t>(rows / kRows * kRows, kRows, 256);
  return std::min(rows, n);
}

template <typename T>
struct Job {
  const PackedB* b;
  const float* a;
  int64_t m;
  int64_t kpad;
  int64_t tile_rows;
  const T* bias;
  T* y;
  DequantRowFn dequant;
  std::atomic<bool> out_of_memory{false};
};

// Rows [n0, n0 + rows) of B^T as float [rows, kpad], outliers added.
void DequantTile(const PackedB& b, DequantRowFn dequant, int64_t n0, int64_t rows, int64_t kpad,
                 float* w) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = n0 + r;
    float* row = w + r * kpad;
    dequant(b.codes + n * b.row_bytes, b.scales + n * b.n_groups, b.zeros + n * b.n_groups, b.k,
            b.group_size, row);
    const int64_t begin = b.outlier_ptr[n];
    const int64_t end = b.outlier_ptr[n + 1];
    if (b.outlier_int8) {
      const float row_scale = HalfToFloat(b.outlier_scale[n]);
      AddOutliersRef(b.outlier_idx, static_cast<const int8_t*>(b.outlier_val), begin, end,
                     row_scale, row);
    } else {
      AddOutliersRef(b.outlier_idx, static_cast<const Half*>(b.outlier_val), begin, end, 1.0f, row);
    }
  }
}

// This thread's scratch of at least `size` floats, kept between runs (ORT's pool threads live
// as long as the session; at most about 1 MB each), or null when memory is short.
float* ThreadScratch(size_t size) noexcept {
  thread_local std::vector<float> scratch;
  try {
    if (scratch.size() < size) scratch.resize(size);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
  return scratch.data();
}

template <typename T>
void RunTile(void* data, size_t tile) {
  auto& job = *static_cast<Job<T>*>(data);
  const PackedB& b = *job.b;
  const int64_t n0 = static_cast<int64_t>(tile) * job.tile_rows;
  const int64_t rows = std::min(job.tile_rows, b.n - n0);
  float* w = ThreadScratch(static_cast<size_t>(rows * job.kpad));
  if (w == nullptr) {
    job.out_of_memory = true;  // an exception must not unwind into ORT's thread pool
    return;
  }
  DequantTile(b, job.dequant, n0, rows, job.kpad, w);

  float out[kRows];
  for (int64_t i = 0; i < job.m; ++i) {
    const float* ai = job.a + i * job.kpad;
    T* yi = job.y + i * b.n + n0;
    int64_t r = 0;
    for (; r + kRows <= rows; r += kRows) {
      DotRows<kRows>(ai, w + r * job.kpad, job.kpad, job.kpad, out);
      for (int j = 0; j < kRows; ++j) {
        const float bias = job.bias ? ToFloat(job.bias[n0 + r + j]) : 0.0f;
        Store(out[j] + bias, yi + r + j);
      }
    }
    for (; r < rows; ++r) {
      DotRows<1>(ai, w + r * job.kpad, job.kpad, job.kpad, out);
      const float bias = job.bias ? ToFloat(job.bias[n0 + r]) : 0.0f;
      Store(out[0] + bias, yi + r);
    }
  }
}

}  // namespace

template <typename T>
void DequantGemm(const PackedB& b, const float* a, int64_t m, const T* bias, T* y,
                 const ParallelRunner& runner) {
  if (m == 0) return;
  Job<T> job;
  job.b = &b;
  job.a = a;
  job.m = m;
  job.kpad = PaddedK(b.k);
  job.tile_rows = TileRows(m, b.n, job.kpad);
  job.bias = bias;
  job.y = y;
  job.dequant = DequantRowFor(b.bits);
  const int64_t tiles = (b.n + job.tile_rows - 1) / job.tile_rows;
  runner.Run(static_cast<size_t>(tiles), &RunTile<T>, &job);
  if (job.out_of_memory) throw std::bad_alloc();
}

template void DequantGemm<float>(const PackedB&, const float*, int64_t, const float*, float*,
                                 const ParallelRunner&);
template void DequantGemm<Half>(const PackedB&, const float*, int64_t, const Half*, Half*,
                                const ParallelRunner&);

}  // namespace adpq::cpu

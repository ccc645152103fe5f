#include "cpu/dequant_gemm.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <new>
#include <type_traits>
#include <vector>

#include "adpq/dequant_ref.h"
#include "adpq/format.h"
#include "cpu/kernels.h"

namespace adpq::cpu {
namespace {

// Multiply-adds a task aims for: about 10-50 us in int8 mode, a little more in float.
constexpr int64_t kTaskMacs = int64_t{1} << 20;
constexpr int64_t kMinTasks = 8;
// Below this many multiply-adds (M * K * N) a call runs on the calling thread alone. Measured
// on SmolLM2 decode (2 threads, BENCHMARKS.md §3): with ORT's default (idle pool threads
// spinning) splitting even its smallest MatMuls (576 x 192, 1.1e5 multiply-adds, ~5 us) over
// the pool took decode from 58 to 65 tokens/s; with spinning off, waking a thread costs a
// little more than it saves (51 -> 49.5). Only calls too small for any hand-off stay serial.
// ADPQ_PARALLEL_MIN_MACS overrides it (read once), for tuning on other machines.
constexpr int64_t kParallelMinMacs = int64_t{1} << 16;
int64_t ParallelMinMacs() {
  static const int64_t value = [] {
    const char* env = std::getenv("ADPQ_PARALLEL_MIN_MACS");
    if (env == nullptr || *env == '\0') return kParallelMinMacs;
    char* end = nullptr;
    const long long v = std::strtoll(env, &end, 10);
    return (end != nullptr && *end == '\0' && v >= 0) ? static_cast<int64_t>(v) : kParallelMinMacs;
  }();
  return value;
}

inline float ToFloat(float v) { return v; }
inline float ToFloat(Half v) { return HalfToFloat(v); }

// A in int8 per group of B (kernels.h QuantizeGroupFn): xscale = max |x| / 127,
// xq = round(x / xscale) (half to even), xu = xq + 128, xsum = xscale * sum xq.
struct QuantizedA {
  std::vector<int8_t> xq;
  std::vector<uint8_t> xu;
  std::vector<float> xscale;
  std::vector<float> xsum;
  std::vector<int32_t> xqsum;
};

void QuantizeRow(const float* x, int64_t i, int64_t kpad, int64_t group_size, int64_t ng,
                 QuantizeGroupFn quantize, QuantizedA& out);

struct PrepJob {
  const float* x;
  int64_t m;
  int64_t kpad;
  int64_t group_size;
  int64_t ng;
  QuantizeGroupFn quantize;
  QuantizedA* q;  // or null
  float* xt;      // or null
  int64_t mpad;
  float* xp;  // A permuted for the AVX-512 float kernel (kernels.h PermuteRowX), or null
};

// Task i of the preparation: quantizes row i of A, and transposes columns [64i, 64i + 64).
void PrepTask(void* data, size_t task) {
  const PrepJob& job = *static_cast<const PrepJob*>(data);
  const auto i = static_cast<int64_t>(task);
  if (job.q != nullptr && i < job.m)
    QuantizeRow(job.x, i, job.kpad, job.group_size, job.ng, job.quantize, *job.q);
  if (job.xp != nullptr && i < job.m)
    PermuteRowX(job.x + i * job.kpad, job.kpad, job.group_size, job.xp + i * job.kpad);
  if (job.xt != nullptr && i * 64 < job.kpad) {
    const int64_t k1 = std::min(job.kpad, i * 64 + 64);
    for (int64_t r = 0; r < job.m; ++r) {
      const float* src = job.x + r * job.kpad;
      float* dst = job.xt + (r / kOutlierPad) * job.kpad * kOutlierPad + r % kOutlierPad;
      for (int64_t k = i * 64; k < k1; ++k) dst[k * kOutlierPad] = src[k];
    }
  }
}

void QuantizeRow(const float* x, int64_t i, int64_t kpad, int64_t group_size, int64_t ng,
                 QuantizeGroupFn quantize, QuantizedA& out) {
  for (int64_t g = 0; g < ng; ++g) {
    const int64_t begin = g * group_size;
    const int64_t len = std::min(group_size, kpad - begin);
    int32_t sum = 0;
    float scale = 0.0f;
    quantize(x + i * kpad + begin, len, out.xq.data() + i * kpad + begin,
             out.xu.data() + i * kpad + begin, &scale, &sum);
    out.xscale[i * ng + g] = scale;
    out.xsum[i * ng + g] = scale * static_cast<float>(sum);
    out.xqsum[i * ng + g] = sum;
  }
}

void Prepare(const PrepJob& job, const ParallelRunner& runner, bool serial) {
  if (job.q != nullptr) {
    job.q->xq.resize(static_cast<size_t>(job.m * job.kpad));
    job.q->xu.resize(static_cast<size_t>(job.m * job.kpad));
    job.q->xscale.resize(static_cast<size_t>(job.m * job.ng));
    job.q->xsum.resize(static_cast<size_t>(job.m * job.ng));
    job.q->xqsum.resize(static_cast<size_t>(job.m * job.ng));
  }
  const int64_t rows = job.q != nullptr || job.xp != nullptr ? job.m : 0;
  const int64_t tasks = std::max(rows, job.xt ? (job.kpad + 63) / 64 : 0);
  if (serial) {
    for (int64_t t = 0; t < tasks; ++t)
      PrepTask(const_cast<PrepJob*>(&job), static_cast<size_t>(t));
  } else if (tasks > 0) {
    runner.Run(static_cast<size_t>(tasks), &PrepTask, const_cast<PrepJob*>(&job));
  }
}

template <typename T>
struct Job {
  const PackedB* b;
  Activations act;
  const float* xt;  // A transposed [kpad, mpad] for the outliers, or null
  int64_t mpad;
  DenseFn dense;
  OutliersFn outliers;
  bool dense_adds_outliers;  // kernels.h DenseAddsOutliers
  Isa isa;
  int64_t tile_rows;
  const T* bias;
  T* y;
  std::atomic<bool> out_of_memory{false};
};

// This thread's scratch of at least `bytes`, kept between runs (ORT's pool threads live as
// long as the session), or null when memory is short.
void* ThreadScratch(size_t bytes) noexcept {
  thread_local std::vector<uint64_t> scratch;
  try {
    const size_t words = (bytes + 7) / 8 + 8;
    if (scratch.size() < words) scratch.resize(words);
  } catch (const std::bad_alloc&) {
    return nullptr;
  }
  return scratch.data();
}

// y[i, n] += sum over row n's outliers of x[i, idx] * val.
template <typename V>
void AddRowOutliers(const PackedB& b, const Activations& a, int64_t n, const V* val,
                    float row_scale, float* y, int64_t ldy) {
  const int64_t begin = b.outlier_ptr[n];
  const int64_t end = b.outlier_ptr[n + 1];
  for (int64_t i = 0; i < a.m && begin < end; ++i) {
    const float* x = a.x + i * a.kpad;
    float s = 0.0f;
    for (int64_t j = begin; j < end; ++j) {
      s += x[b.outlier_idx[j]] * OutlierValue(val[j], row_scale);
    }
    y[i * ldy] += s;
  }
}

template <typename T>
void RunTile(void* data, size_t tile) {
  auto& job = *static_cast<Job<T>*>(data);
  const PackedB& b = *job.b;
  const Activations& a = job.act;
  const int64_t n0 = static_cast<int64_t>(tile) * job.tile_rows;
  const int64_t rows = std::min(job.tile_rows, b.n - n0);
  constexpr bool kFloatY = std::is_same_v<T, float>;
  const size_t kernel_bytes = (ScratchBytes(job.isa, b, a.m, rows) + 63) / 64 * 64;
  const size_t y_bytes = kFloatY ? 0 : static_cast<size_t>(a.m * rows) * sizeof(float);
  auto* scratch = static_cast<uint8_t*>(ThreadScratch(kernel_bytes + y_bytes));
  if (scratch == nullptr) {
    job.out_of_memory = true;  // an exception must not unwind into ORT's thread pool
    return;
  }
  float* y;
  int64_t ldy;
  if constexpr (kFloatY) {
    y = job.y + n0;
    ldy = b.n;
  } else {
    y = reinterpret_cast<float*>(scratch + kernel_bytes);
    ldy = rows;
  }
  job.dense(b, a, n0, n0 + rows, y, ldy, scratch);

  if (job.dense_adds_outliers) {
    // nothing left to add
  } else if (job.outliers != nullptr) {
    job.outliers(b, job.xt != nullptr ? job.xt : a.x, a.m, a.kpad, n0, rows, y, ldy);
  }
  for (int64_t r = 0; r < rows && job.outliers == nullptr && !job.dense_adds_outliers; ++r) {
    const int64_t n = n0 + r;
    if (b.outlier_int8) {
      AddRowOutliers(b, a, n, static_cast<const int8_t*>(b.outlier_val),
                     HalfToFloat(b.outlier_scale[n]), y + r, ldy);
    } else {
      AddRowOutliers(b, a, n, static_cast<const Half*>(b.outlier_val), 1.0f, y + r, ldy);
    }
  }
  if (kFloatY && job.bias == nullptr) return;
  for (int64_t i = 0; i < a.m; ++i) {
    for (int64_t r = 0; r < rows; ++r) {
      const float v = y[i * ldy + r] + (job.bias ? ToFloat(job.bias[n0 + r]) : 0.0f);
      if constexpr (kFloatY) {
        y[i * ldy + r] = v;
      } else {
        job.y[i * b.n + n0 + r] = FloatToHalf(v);
      }
    }
  }
}

// Rows of B per task: about kTaskMacs of work, a multiple of `quantum` (the register tile's
// rows of B, kernels.h TileQuantum), and at least kMinTasks tasks when N allows.
int64_t TileRows(int64_t m, int64_t n, int64_t kpad, int64_t quantum) {
  int64_t rows = kTaskMacs / std::max<int64_t>(1, kpad * m);
  rows = std::min(rows, (n + kMinTasks - 1) / kMinTasks);
  rows = std::clamp<int64_t>((rows + quantum - 1) / quantum * quantum,
                             std::max<int64_t>(8, quantum), 512);
  return std::min(rows, n);
}

}  // namespace

void HalfToFloatN(const Half* src, float* dst, int64_t n) {
#if defined(__x86_64__) || defined(_M_X64)
  if (IsaSupported(Isa::kAvx2)) {
    HalfToFloatAvx2(src, dst, n);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = HalfToFloat(src[i]);
}

template <typename T>
void DequantGemm(const PackedB& b, const float* a, int64_t m, const T* bias, T* y,
                 const ParallelRunner& runner, const GemmOptions& options) {
  if (m == 0) return;
  Job<T> job;
  job.b = &b;
  job.isa = SelectIsa();
  job.dense = DenseFor(job.isa);
  Activations& act = job.act;
  act.m = m;
  act.kpad = PaddedK(b.k);
  act.n_groups = b.n_groups;
  act.x = a;
  act.int8 = options.int8_activations && b.bits <= 4;
  act.amx = act.int8 && job.isa == Isa::kAvx512 && m >= kPrefillM && AmxUsable();
  // Kept between calls (per calling thread): fresh pages on every call would cost more than
  // the work.
  thread_local QuantizedA qa;
  thread_local std::vector<float> xt;
  thread_local std::vector<float> xp;
  const bool permute = UsesPermutedX(job.isa, b.bits, act.int8, b.group_size, m);
  if (permute) xp.resize(static_cast<size_t>(m * act.kpad));
  job.outliers = OutliersFor(job.isa);
  job.dense_adds_outliers = DenseAddsOutliers(job.isa, b.bits, act.int8, m);
  job.mpad = (m + kOutlierPad - 1) / kOutlierPad * kOutlierPad;
  const bool transpose =
      m >= kOutlierTransposeM && b.nnz > 0 && job.outliers != nullptr && !job.dense_adds_outliers;
  if (transpose) {
    xt.resize(static_cast<size_t>(act.kpad * job.mpad));
    // Only the padding rows of the last chunk need zeros; the rest is overwritten.
    const int64_t last = (m - 1) / kOutlierPad * kOutlierPad * act.kpad;
    std::fill(xt.begin() + last, xt.end(), 0.0f);
  }
  const PrepJob prep{a,
                     m,
                     act.kpad,
                     b.group_size,
                     b.n_groups,
                     QuantizeGroupFor(job.isa),
                     act.int8 ? &qa : nullptr,
                     transpose ? xt.data() : nullptr,
                     job.mpad,
                     permute ? xp.data() : nullptr};
  const bool serial = m * act.kpad * b.n < ParallelMinMacs();
  Prepare(prep, runner, serial);
  if (permute) act.xp = xp.data();
  job.xt = transpose ? xt.data() : nullptr;
  if (act.int8) {
    act.xq = qa.xq.data();
    act.xu = qa.xu.data();
    act.xscale = qa.xscale.data();
    act.xsum = qa.xsum.data();
    act.xqsum = qa.xqsum.data();
  }
  job.tile_rows = TileRows(m, b.n, act.kpad, TileQuantum(job.isa, b.bits, act.int8, m));
  job.bias = bias;
  job.y = y;
  const int64_t tiles = (b.n + job.tile_rows - 1) / job.tile_rows;
  if (serial) {
    for (int64_t t = 0; t < tiles; ++t) RunTile<T>(&job, static_cast<size_t>(t));
  } else {
    runner.Run(static_cast<size_t>(tiles), &RunTile<T>, &job);
  }
  if (job.out_of_memory) throw std::bad_alloc();
}

template void DequantGemm<float>(const PackedB&, const float*, int64_t, const float*, float*,
                                 const ParallelRunner&, const GemmOptions&);
template void DequantGemm<Half>(const PackedB&, const float*, int64_t, const Half*, Half*,
                                const ParallelRunner&, const GemmOptions&);

}  // namespace adpq::cpu

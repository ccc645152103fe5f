// Kernel-only timing of the CPU AdpQMatMul (DequantGemm), outside ONNX Runtime: one thread,
// random codes and outliers, minimum over repeats (the kernel's own cost, without ORT's
// per-node overhead or thread wake-ups). For tuning; benchmarks/cpu_ops.py is the comparison
// that counts.
//
//   cpu_kernel_bench K N M BITS GROUP ALPHA [int8=1] [reps=200]     (COPIES=8: weights cycled)
//
// Build (from the repository root; ORT_INCLUDE_DIR as for the library, docs/BUILD.md; the
// header-only ORT C++ API is only needed for the shared structs, nothing links ORT):
//   I="-Icustom_ops/include -Icustom_ops -I$ORT_INCLUDE_DIR -DORT_API_MANUAL_INIT -O3 -std=c++17"
//   g++ $I -c custom_ops/cpu/kernels_avx2.cc -mavx2 -mfma -mf16c -o /tmp/k2.o
//   g++ $I -c custom_ops/cpu/kernels_avx512.cc -mavx2 -mfma -mf16c -mavx512f -mavx512bw \
//     -mavx512vl -mavx512dq -mavx512vnni -o /tmp/k5.o
//   g++ $I benchmarks/native/cpu_kernel_bench.cc custom_ops/cpu/dequant_gemm.cc \
//     custom_ops/cpu/kernels.cc /tmp/k2.o /tmp/k5.o -o /tmp/cpu_kernel_bench
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "adpq/format.h"
#include "cpu/dequant_gemm.h"

using namespace adpq;
using namespace adpq::cpu;

namespace {
struct Serial : ParallelRunner {
  void Run(size_t total, void (*fn)(void*, size_t), void* data) const override {
    for (size_t i = 0; i < total; ++i) fn(data, i);
  }
};
}  // namespace

int main(int argc, char** argv) {
  if (argc < 7) {
    std::fprintf(stderr, "usage: %s K N M BITS GROUP ALPHA [int8=1] [reps=200]\n", argv[0]);
    return 2;
  }
  const int64_t k = std::atoll(argv[1]), n = std::atoll(argv[2]), m = std::atoll(argv[3]);
  const int bits = std::atoi(argv[4]);
  const int64_t g = std::atoll(argv[5]);
  const double alpha = std::atof(argv[6]);
  const bool int8 = argc > 7 ? std::atoi(argv[7]) != 0 : true;
  const int reps = argc > 8 ? std::atoi(argv[8]) : 200;
  std::mt19937 rng(0);
  const int64_t kpad = PaddedK(k);
  const int64_t ng = (k + g - 1) / g;
  const int64_t row_bytes = kpad / kBlock * BlockBytes(bits);
  // Several copies of B so that the weights stream from memory, as in a model.
  const int kCopies = std::getenv("COPIES") ? std::atoi(std::getenv("COPIES")) : 8;
  std::vector<std::vector<uint8_t>> codes(kCopies, std::vector<uint8_t>(n * row_bytes));
  for (auto& c : codes)
    for (auto& v : c) v = static_cast<uint8_t>(rng());
  std::vector<Half> scales(n * ng, Half{0x2000});
  std::vector<uint8_t> zeros(n * ng);
  for (auto& z : zeros) z = static_cast<uint8_t>(rng() % (1u << bits));
  std::vector<int32_t> ptr(n + 1, 0);
  std::vector<uint16_t> idx;
  std::vector<int8_t> val;
  const int64_t per_row = static_cast<int64_t>(alpha * k + 0.5);
  for (int64_t r = 0; r < n; ++r) {
    std::vector<uint16_t> row;
    for (int64_t j = 0; j < per_row; ++j) row.push_back(static_cast<uint16_t>(rng() % k));
    std::sort(row.begin(), row.end());
    row.erase(std::unique(row.begin(), row.end()), row.end());
    for (auto i : row) {
      idx.push_back(i);
      val.push_back(static_cast<int8_t>(static_cast<int>(rng() % 255) - 127));
    }
    ptr[r + 1] = static_cast<int32_t>(idx.size());
  }
  std::vector<Half> oscale(n, Half{0x1c00});
  std::vector<float> a(m * kpad, 0.0f);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < k; ++j) a[i * kpad + j] = u(rng);
  std::vector<float> y(m * n);
  PackedB b;
  b.k = k;
  b.n = n;
  b.bits = bits;
  b.group_size = g;
  b.n_groups = ng;
  b.row_bytes = row_bytes;
  b.scales = scales.data();
  b.zeros = zeros.data();
  b.outlier_ptr = ptr.data();
  b.outlier_idx = idx.data();
  b.outlier_val = val.data();
  b.outlier_int8 = true;
  b.outlier_scale = oscale.data();
  b.nnz = static_cast<int64_t>(idx.size());
  GemmOptions options;
  options.int8_activations = int8;
  const Serial runner;
  double best = 1e30, sum = 0.0;
  for (int rep = 0; rep < reps; ++rep) {
    double t = 0.0;
    for (int c = 0; c < kCopies; ++c) {
      b.codes = codes[c].data();
      const auto t0 = std::chrono::steady_clock::now();
      DequantGemm<float>(b, a.data(), m, nullptr, y.data(), runner, options);
      t += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    t /= kCopies;
    best = std::min(best, t);
    sum += t;
  }
  std::printf("K=%lld N=%lld M=%lld bits=%d g=%lld alpha=%.3f int8=%d  min %.2f us  mean %.2f us\n",
              (long long)k, (long long)n, (long long)m, bits, (long long)g, alpha, int8 ? 1 : 0,
              best * 1e6, sum / reps * 1e6);
  return 0;
}

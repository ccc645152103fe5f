#include "cpu/kernels.h"

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__linux__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "adpq/dequant_ref.h"
#include "adpq/format.h"

namespace adpq::cpu {
namespace {

bool CpuHas(Isa isa) {
#if defined(__x86_64__) || defined(_M_X64)
  switch (isa) {
    case Isa::kRef: return true;
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case Isa::kAvx512:
      return CpuHas(Isa::kAvx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
  }
  return false;
#else
  return isa == Isa::kRef;
#endif
}

template <int Bits>
void UnpackRowRef(const uint8_t* codes_row, int64_t blocks, uint8_t* out) {
  for (int64_t blk = 0; blk < blocks; ++blk) {
    UnpackBlockRef<Bits>(codes_row, blk, blocks, out + blk * kBlock);
  }
}

void UnpackRow(int bits, const uint8_t* codes_row, int64_t blocks, uint8_t* out) {
  switch (bits) {
    case 2: UnpackRowRef<2>(codes_row, blocks, out); break;
    case 3: UnpackRowRef<3>(codes_row, blocks, out); break;
    case 4: UnpackRowRef<4>(codes_row, blocks, out); break;
    default: UnpackRowRef<8>(codes_row, blocks, out); break;
  }
}

}  // namespace

bool AmxUsable() {
#if (defined(__x86_64__) || defined(_M_X64)) && defined(__linux__)
  static const bool granted = [] {
    if (!AmxCompiled() || !CpuHas(Isa::kAvx512)) return false;
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    const bool tile = (edx >> 24) & 1u;
    const bool int8 = (edx >> 25) & 1u;
    if (!tile || !int8) return false;
    // Linux enables the 8 KB tile data state per process on request (ARCH_REQ_XCOMP_PERM,
    // feature 18, XTILEDATA); without it the first tile instruction faults.
    constexpr long kArchReqXcompPerm = 0x1023;
    constexpr long kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  if (!granted) return false;
  const char* env = std::getenv("ADPQ_CPU_AMX");
  return env == nullptr || std::strcmp(env, "0") != 0;
#else
  return false;
#endif
}

bool IsaSupported(Isa isa) {
  static const bool has[3] = {true, CpuHas(Isa::kAvx2), CpuHas(Isa::kAvx512)};
  return has[static_cast<int>(isa)];
}

const char* IsaName(Isa isa) {
  switch (isa) {
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
    default: return "ref";
  }
}

Isa SelectIsa() {
  Isa want = Isa::kAvx512;
  if (const char* env = std::getenv("ADPQ_CPU_KERNEL")) {
    if (std::strcmp(env, "ref") == 0) want = Isa::kRef;
    if (std::strcmp(env, "avx2") == 0) want = Isa::kAvx2;
  }
  while (!IsaSupported(want)) want = static_cast<Isa>(static_cast<int>(want) - 1);
  return want;
}

size_t ScratchBytes(Isa isa, const PackedB& b, int64_t m, int64_t rows) {
  switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::kAvx2: return ScratchAvx2(b, m, rows);
    case Isa::kAvx512: return ScratchAvx512(b, m, rows);
#endif
    default: return static_cast<size_t>(PaddedK(b.k) * (sizeof(float) + 1));
  }
}

DenseFn DenseFor(Isa isa) {
  switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::kAvx2: return &DenseAvx2;
    case Isa::kAvx512: return &DenseAvx512;
#endif
    default: return &DenseRef;
  }
}

OutliersFn OutliersFor(Isa isa) {
  switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::kAvx2: return &OutliersAvx2;
    case Isa::kAvx512: return &OutliersAvx512;
#endif
    default: return nullptr;
  }
}

QuantizeGroupFn QuantizeGroupFor(Isa isa) {
  switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
    case Isa::kAvx2: return &QuantizeGroupAvx2;
    case Isa::kAvx512: return &QuantizeGroupAvx512;
#endif
    default: return &QuantizeGroupRef;
  }
}

bool DenseAddsOutliers(Isa isa, int bits, bool int8, int64_t m) {
  return isa == Isa::kAvx512 && int8 && bits <= 4 && m < kPrefillM;
}

int64_t TileQuantum(Isa isa, int bits, bool int8, int64_t m) {
  // The AVX-512 prefill kernels (int8 and float): 2 panels of 16 rows (kernels_x86.inc).
  return isa == Isa::kAvx512 && bits <= 4 && m >= (int8 ? kPrefillM : kPrefillMFloat) ? 32 : 4;
}

bool UsesPermutedX(Isa isa, int bits, bool int8, int64_t group_size, int64_t m) {
  if (m >= kPrefillMFloat) return false;  // the float prefill kernel reads A as it is
  // 3-bit pairs are units of two blocks from an even block: groups of an odd number of blocks
  // would pair them differently from PermuteRowX, so those take the generic float kernel.
  const bool pairs_are_units = bits != 3 || (group_size / kBlock) % 2 == 0;
  return isa == Isa::kAvx512 && !int8 && bits <= 4 && pairs_are_units;
}

void PermuteRowX(const float* x, int64_t kpad, int64_t group_size, float* xp) {
  const int64_t nblocks = kpad / kBlock;
  const int64_t per_group = group_size / kBlock;
  for (int64_t g0 = 0; g0 < nblocks; g0 += per_group) {
    const int64_t end = std::min(g0 + per_group, nblocks);
    for (int64_t blk = g0; blk < end; blk += 2) {
      const int64_t k0 = blk * kBlock;
      const int64_t lanes = blk + 2 <= end ? 16 : 8;
      for (int64_t s = 0; s < 4; ++s)
        for (int64_t d = 0; d < lanes; ++d) xp[k0 + lanes * s + d] = x[k0 + 4 * d + s];
    }
  }
}

void QuantizeGroupRef(const float* x, int64_t len, int8_t* q, uint8_t* u, float* scale,
                      int32_t* sum) {
  float amax = 0.0f;
  for (int64_t k = 0; k < len; ++k) amax = std::max(amax, std::fabs(x[k]));
  *scale = amax / 127.0f;
  const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
  int32_t total = 0;
  for (int64_t k = 0; k < len; ++k) {
    const float v = std::min(std::max(x[k] * inv, -127.0f), 127.0f);
    const auto c = static_cast<int32_t>(std::nearbyint(v));  // half to even
    q[k] = static_cast<int8_t>(c);
    u[k] = static_cast<uint8_t>(c + 128);
    total += c;
  }
  *sum = total;
}

// The reference: one row of B at a time, one code at a time.
//   float mode: the row dequantized by DequantRowRef, dotted with each row of A.
//   int8 mode:  y = sum_g s[n, g] * xscale[m, g] * (sum_k xq * q - z[n, g] * sum_k xq), the
//               bracket exact in int64.
void DenseRef(const PackedB& b, const Activations& a, int64_t n0, int64_t n1, float* y, int64_t ldy,
              void* scratch) {
  const int64_t kpad = a.kpad;
  float* w = static_cast<float*>(scratch);
  auto* q = reinterpret_cast<uint8_t*>(w + kpad);
  for (int64_t n = n0; n < n1; ++n) {
    const Half* scales = b.scales + n * b.n_groups;
    const uint8_t* zeros = b.zeros + n * b.n_groups;
    const uint8_t* codes = b.codes + n * b.row_bytes;
    if (!a.int8) {
      switch (b.bits) {
        case 2: DequantRowRef<2>(codes, scales, zeros, b.k, b.group_size, w); break;
        case 3: DequantRowRef<3>(codes, scales, zeros, b.k, b.group_size, w); break;
        case 4: DequantRowRef<4>(codes, scales, zeros, b.k, b.group_size, w); break;
        default: DequantRowRef<8>(codes, scales, zeros, b.k, b.group_size, w); break;
      }
      for (int64_t i = 0; i < a.m; ++i) {
        const float* x = a.x + i * kpad;
        float s = 0.0f;
        for (int64_t k = 0; k < kpad; ++k) s += x[k] * w[k];
        y[i * ldy + (n - n0)] = s;
      }
      continue;
    }
    UnpackRow(b.bits, codes, kpad / kBlock, q);
    for (int64_t i = 0; i < a.m; ++i) {
      const int8_t* xq = a.xq + i * kpad;
      float s = 0.0f;
      for (int64_t g = 0; g < a.n_groups; ++g) {
        const int64_t end = g * b.group_size + b.group_size < kpad ? (g + 1) * b.group_size : kpad;
        int64_t dot = 0;
        int64_t xsum = 0;
        for (int64_t k = g * b.group_size; k < end; ++k) {
          dot += static_cast<int64_t>(xq[k]) * q[k];
          xsum += xq[k];
        }
        const float scale = HalfToFloat(scales[g]) * a.xscale[i * a.n_groups + g];
        s += scale * static_cast<float>(dot - static_cast<int64_t>(zeros[g]) * xsum);
      }
      y[i * ldy + (n - n0)] = s;
    }
  }
}

}  // namespace adpq::cpu

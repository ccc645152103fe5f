// The CPU compute variants of AdpQMatMul and how one is chosen at run time.
//
// Every variant computes the dense part of Y = A · B for a range of output channels n:
//
//   y[m, n] = sum_g s[n, g] * (sum_{k in g} x[m, k] * q[n, k]  -  z[n, g] * sum_{k in g} x[m, k])
//
// (outliers and bias are added afterwards by the caller, sparsely). Two activation modes:
//
//   float (accuracy_level 0, default): x in float32; the SIMD kernels dequantize B in registers
//     ((q - z) * s, exactly as the reference) and accumulate with FMA.
//   int8 (accuracy_level 4, opt-in): each row of A is quantized per group of B to int8 with a
//     float scale (round to nearest, symmetric, |x| max -> 127); dot products are exact in int32
//     (VNNI vpdpbusd, or AVX2 vpmaddubsw) and scaled once per group.
//
// Variants: kRef (portable scalar, the reference), kAvx2 (AVX2 + FMA + F16C), kAvx512 (AVX-512
// F/BW/VL/DQ + VNNI). Each SIMD variant is its own translation unit compiled with its own target
// flags; the dispatcher picks the best one the CPU supports, or the one that ADPQ_CPU_KERNEL
// (ref|avx2|avx512|auto) names.
#pragma once

#include <cstddef>
#include <cstdint>

#include "adpq/half.h"
#include "common/matmul_args.h"

namespace adpq::cpu {

enum class Isa { kRef = 0, kAvx2 = 1, kAvx512 = 2 };

// The variant to use: ADPQ_CPU_KERNEL when set (a variant this CPU lacks falls back to the best
// one it has; an unknown name means auto), else the best supported. Read on every call, so that
// tests can switch variants between runs.
Isa SelectIsa();
bool IsaSupported(Isa isa);
const char* IsaName(Isa isa);

// Activations of one run, prepared once per call and shared by all tasks.
struct Activations {
  int64_t m = 0;
  int64_t kpad = 0;      // PaddedK(K): rows of x, xq, xu are zero past K
  int64_t n_groups = 0;  // groups of B along K
  bool int8 = false;
  const float* x = nullptr;        // float [m, kpad] (always; outliers use it in both modes)
  const int8_t* xq = nullptr;      // int8 mode: round(x / xscale) [m, kpad]
  const uint8_t* xu = nullptr;     // int8 mode: xq + 128 [m, kpad]
  const float* xscale = nullptr;   // int8 mode: [m, n_groups]
  const float* xsum = nullptr;     // float: sum x per group; int8: xscale * sum xq; [m, n_groups]
  const int32_t* xqsum = nullptr;  // int8 mode: sum xq per group [m, n_groups]
  const float* xp = nullptr;       // float mode, when UsesPermutedX: PermuteRowX(x) [m, kpad]
  bool amx = false;                // int8 prefill may use AMX tiles (AmxUsable())
};

// AMX (tdpbusd on 16 x 64-byte tiles) for the AVX-512 int8 prefill kernel: the library was
// built with it, the CPU has AMX-TILE and AMX-INT8, the OS granted this process the tile data
// state (Linux arch_prctl, asked once), and ADPQ_CPU_AMX is not "0" (read on every call, so
// that tests can compare both paths).
bool AmxUsable();
bool AmxCompiled();  // defined by the AVX-512 translation unit

// The AVX-512 float kernel for bits <= 4 dequantizes 16 codes with one table lookup (vpermps)
// and reads A in the order the lookups produce: within each group of B, blocks are taken in
// pairs from the group's first block (a last odd block alone), and for a pair starting at
// k0 = 32 * blk,  xp[k0 + 16 s + d] = x[k0 + 4 d + s]  (s < 4, d < 16); for a lone block,
// xp[k0 + 8 s + d] = x[k0 + 4 d + s]  (s < 4, d < 8). Not for 3 bits in groups of an odd
// number of blocks (3-bit pairs are units, format.h).
bool UsesPermutedX(Isa isa, int bits, bool int8, int64_t group_size, int64_t m);
void PermuteRowX(const float* x, int64_t kpad, int64_t group_size, float* xp);

// Dense part of rows [n0, n1) of Y^T for every row of A: y[i * ldy + (n - n0)] for i < m.
// Needs ScratchBytes(isa, b, m, n1 - n0) bytes of scratch.
using DenseFn = void (*)(const PackedB& b, const Activations& a, int64_t n0, int64_t n1, float* y,
                         int64_t ldy, void* scratch);

size_t ScratchBytes(Isa isa, const PackedB& b, int64_t m, int64_t rows);
size_t ScratchAvx2(const PackedB& b, int64_t m, int64_t rows);
size_t ScratchAvx512(const PackedB& b, int64_t m, int64_t rows);

void DenseRef(const PackedB& b, const Activations& a, int64_t n0, int64_t n1, float* y, int64_t ldy,
              void* scratch);
// The SIMD variants; only called when IsaSupported() says so (they are absent, and these
// declarations unused, on non-x86 builds).
void DenseAvx2(const PackedB& b, const Activations& a, int64_t n0, int64_t n1, float* y,
               int64_t ldy, void* scratch);
void DenseAvx512(const PackedB& b, const Activations& a, int64_t n0, int64_t n1, float* y,
                 int64_t ldy, void* scratch);
// Outliers of rows [n0, n0 + rows) added to y, from A transposed in chunks of kOutlierPad
// rows: xt [ceil(m / kOutlierPad)][kpad][kOutlierPad], zero past m; or, when
// m < kOutlierTransposeM, xt is A itself [m, kpad] (a scalar loop over the rows of A, which
// at M = 16 took as long as the dense part of a 4096 x 4096 MatMul at 0.5 % outliers; the
// transposed chunk costs a vector loop per outlier, however few rows it holds).
using OutliersFn = void (*)(const PackedB& b, const float* xt, int64_t m, int64_t kpad, int64_t n0,
                            int64_t rows, float* y, int64_t ldy);
inline constexpr int kOutlierPad = 32;
inline constexpr int kOutlierTransposeM = 4;
void OutliersAvx2(const PackedB& b, const float* xt, int64_t m, int64_t kpad, int64_t n0,
                  int64_t rows, float* y, int64_t ldy);
void OutliersAvx512(const PackedB& b, const float* xt, int64_t m, int64_t kpad, int64_t n0,
                    int64_t rows, float* y, int64_t ldy);
// The SIMD outlier kernel of a variant, or null for kRef (which adds outliers row by row).
OutliersFn OutliersFor(Isa isa);

// One group of a row of A to int8 (len a multiple of 32): xscale, xq, xu = xq + 128 and
// sum xq. Every variant rounds alike (half to even), so all see the same int8 A.
using QuantizeGroupFn = void (*)(const float* x, int64_t len, int8_t* q, uint8_t* u, float* scale,
                                 int32_t* sum);
void QuantizeGroupRef(const float* x, int64_t len, int8_t* q, uint8_t* u, float* scale,
                      int32_t* sum);
void QuantizeGroupAvx2(const float* x, int64_t len, int8_t* q, uint8_t* u, float* scale,
                       int32_t* sum);
void QuantizeGroupAvx512(const float* x, int64_t len, int8_t* q, uint8_t* u, float* scale,
                         int32_t* sum);
QuantizeGroupFn QuantizeGroupFor(Isa isa);

// float16 -> float32 of n values (F16C when the CPU has it).
void HalfToFloatAvx2(const Half* src, float* dst, int64_t n);

DenseFn DenseFor(Isa isa);

// The AVX-512 kernels: the prefill kernels (int8 and float) from this many rows of A, the
// decode kernels below.
inline constexpr int64_t kPrefillM = 8;
// The AVX-512 float prefill kernel from this many rows of A.
inline constexpr int64_t kPrefillMFloat = 16;

// True when the dense kernel also adds the outliers (inside its register tile, while the rows
// of A are hot in L1): the AVX-512 int8 decode kernel. Otherwise the caller adds them
// (OutliersFor, or row by row for kRef).
bool DenseAddsOutliers(Isa isa, int bits, bool int8, int64_t m);

// Rows of B of the dense kernel's register tile: tasks take multiples of it.
int64_t TileQuantum(Isa isa, int bits, bool int8, int64_t m);

}  // namespace adpq::cpu

// The AdpQ packed-weight layout, mirrored from adpq_onnx/formats/bitpack.py and packed.py (the
// spec). This is the only C++ definition of the layout; the CPU and CUDA code both include it.
//
// For ONNX  Y[..., N] = A[..., K] · B[K, N],  B is stored transposed (row n = output channel):
//
//   input          dtype          shape                       meaning
//   codes          uint8          [N, ceil(K/32) * 4 * bits]  b-bit codes in blocks of 32
//   scales         float16        [N, n_groups]               group scale
//   zero_points    uint8          [N, n_groups]               integer zero point
//   outlier_ptr    int32          [N + 1]                     CSR row pointers
//   outlier_idx    uint16         [nnz]                       K index of each outlier
//   outlier_val    float16|int8   [nnz]                       outlier value (or int8 code)
//   outlier_scale  float16        [N]                         only with int8 outlier_val
//
// n_groups = ceil(K / G) with G = block_size (a multiple of 32, so a block of 32 codes never
// straddles two groups; the last group may be short), and
//
//   B[k, n] = (code[n, k] - zero_points[n, g]) * scales[n, g]  +  sum of row n's outliers at k
//   outlier = outlier_val[i]                      (float16)
//           = outlier_val[i] * outlier_scale[n]   (int8)
//
// A row of K codes is zero-padded to a multiple of 32 and cut into blocks of 32 codes. A block
// of b-bit codes takes 4*b bytes: bit planes, low bits first. A p-bit plane (p >= 2) of a run
// of R codes takes R*p/8 bytes; byte j holds codes j + s*(R*p/8) for s = 0 .. 8/p - 1 at bit
// offset s*p, so one shift-and-mask of a plane yields a run of R*p/8 consecutive codes (no
// shuffles in a SIMD unpack). 2-, 4- and 8-bit blocks are one plane of R = 32 each:
//
//   bits  planes   bytes per block
//   2     [2]      8
//   3     [2, 1]   8 + 4 = 12
//   4     [4]      16
//   8     [8]      32
//
// 3 bits come in units of two blocks (2i, 2i + 1: 64 codes, 24 bytes); a row with an odd
// number of blocks ends with a unit of one block (32 codes, 12 bytes), so block b's unit starts
// at byte 12 * (b - b % 2). A unit of R codes is its 2-bit plane (R/4 bytes, the rule above
// with run R) followed by its 1-bit plane (bit 2 of each code) in R/8 bytes, natural bit
// order: bit c of the little-endian R-bit word belongs to code c. (AVX-512 unpacks a unit with
// one broadcast, shift and mask plus one mask-register load and masked add.)
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__CUDACC__)
#define ADPQ_HOST_DEVICE __host__ __device__
#else
#define ADPQ_HOST_DEVICE
#endif

namespace adpq {

// The op's identity; adpq_onnx/ops/spec.py holds the same strings (test_domain.py checks it).
inline constexpr char kAdpqDomain[] = "adpq_onnx";
inline constexpr int kAdpqDomainVersion = 1;
inline constexpr char kAdpqMatMulName[] = "AdpQMatMul";

// Input order of AdpQMatMul (spec.INPUTS).
enum Input : int {
  kInputA = 0,
  kInputCodes,
  kInputScales,
  kInputZeroPoints,
  kInputOutlierPtr,
  kInputOutlierIdx,
  kInputOutlierVal,
  kInputBias,          // optional
  kInputOutlierScale,  // optional; required iff outlier_val is int8
  kNumInputs,
};

inline constexpr int kBlock = 32;  // codes per block
// Attribute `packing` of a 3-bit node: the layout of its codes. 2 = units of two blocks (below);
// 3-bit nodes without it were written by adpq-onnx 0.1 in per-block planes and are refused.
inline constexpr int64_t kPacking3 = 2;
inline constexpr int kMinGroupSize = 32;
inline constexpr int kMaxGroupSize = 256;

ADPQ_HOST_DEVICE constexpr bool IsSupportedBits(int64_t bits) {
  return bits == 2 || bits == 3 || bits == 4 || bits == 8;
}

ADPQ_HOST_DEVICE constexpr bool IsSupportedGroupSize(int64_t g) {
  return g >= kMinGroupSize && g <= kMaxGroupSize && g % kBlock == 0;
}

// Bytes of one block of 32 codes.
ADPQ_HOST_DEVICE constexpr int BlockBytes(int bits) { return 4 * bits; }

// Bytes of one packed row of K codes (padded to a multiple of 32 codes).
ADPQ_HOST_DEVICE constexpr int64_t PackedRowBytes(int64_t k, int bits) {
  return (k + kBlock - 1) / kBlock * BlockBytes(bits);
}

ADPQ_HOST_DEVICE constexpr int64_t PaddedK(int64_t k) { return (k + kBlock - 1) / kBlock * kBlock; }

ADPQ_HOST_DEVICE constexpr int64_t NumGroups(int64_t k, int64_t group_size) {
  return (k + group_size - 1) / group_size;
}

// The planes of a code width, low bits first (bitpack.PLANES).
struct Planes {
  int count;
  int width[2];
};

ADPQ_HOST_DEVICE constexpr Planes PlanesOf(int bits) {
  return bits == 3 ? Planes{2, {2, 1}} : Planes{1, {bits, 0}};
}

// One block of 32 codes per width: plane pN holds N bits of each code in 4*N bytes.
struct BlockQ2 {
  uint8_t p2[8];
};
struct BlockQ3 {  // the last block of a row with an odd number of blocks (a unit of 32)
  uint8_t p2[8];  // bits 0-1
  uint8_t p1[4];  // bit 2, bit c = code c
};
struct UnitQ3 {    // two blocks of 3-bit codes, 64 codes
  uint8_t p2[16];  // bits 0-1: byte j holds codes j, j + 16, j + 32, j + 48
  uint8_t p1[8];   // bit 2, bit c = code c
};
struct BlockQ4 {
  uint8_t p4[16];
};
struct BlockQ8 {
  uint8_t p8[32];
};

static_assert(sizeof(BlockQ2) == BlockBytes(2), "2-bit block is 8 bytes");
static_assert(sizeof(BlockQ3) == BlockBytes(3), "3-bit block is 12 bytes");

// Where block blk of a 3-bit row of nblocks blocks lives: its unit's byte offset in the row,
// and whether that unit holds two blocks (else it is the row's last, lone block).
ADPQ_HOST_DEVICE constexpr int64_t Unit3Offset(int64_t blk) {
  return (blk - blk % 2) * BlockBytes(3);
}
ADPQ_HOST_DEVICE constexpr bool Unit3IsPair(int64_t blk, int64_t nblocks) {
  return (blk | 1) < nblocks;
}
static_assert(sizeof(UnitQ3) == 2 * BlockBytes(3), "a 3-bit unit is two blocks' bytes");
static_assert(sizeof(BlockQ4) == BlockBytes(4), "4-bit block is 16 bytes");
static_assert(sizeof(BlockQ8) == BlockBytes(8), "8-bit block is 32 bytes");

// Each plane of width p holds 32 p-bit values in 4*p bytes, and the planes of a width cover
// exactly its bits.
ADPQ_HOST_DEVICE constexpr bool PlanesCoverBits(int bits) {
  int sum = 0;
  int bytes = 0;
  for (int i = 0; i < PlanesOf(bits).count; ++i) {
    sum += PlanesOf(bits).width[i];
    bytes += 4 * PlanesOf(bits).width[i];
  }
  return sum == bits && bytes == BlockBytes(bits);
}
static_assert(PlanesCoverBits(2) && PlanesCoverBits(3) && PlanesCoverBits(4) && PlanesCoverBits(8),
              "planes must cover every bit of a code, 4 bytes per plane bit");
static_assert(kMaxGroupSize % kBlock == 0 && kMinGroupSize == kBlock,
              "a block must never straddle two groups");

}  // namespace adpq

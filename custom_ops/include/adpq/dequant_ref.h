// Scalar reference of the packed layout (format.h): unpack a block, dequantize a row, add a
// row's outliers. Written for clarity, one code at a time, as a line-by-line mirror of
// adpq_onnx/formats/bitpack.py and quant/affine.py; fast kernels are tested against it (and it
// against numpy, through the op tests). The CPU kernel uses it directly until a SIMD fast path
// sits beside it.
#pragma once

#include <cstdint>

#include "adpq/format.h"
#include "adpq/half.h"

namespace adpq {

// Ors bits [shift, shift + p) of a run of R codes from one p-bit plane (p >= 2) of R*p/8 bytes:
// byte j holds the codes j + s*(R*p/8) at bit s*p.
template <int P, int R = kBlock>
ADPQ_HOST_DEVICE inline void UnpackPlaneRef(const uint8_t* plane, int shift, uint8_t* codes) {
  constexpr int kRun = R * P / 8;
  constexpr int kPerByte = 8 / P;
  constexpr unsigned kMask = (1u << P) - 1u;
  for (int s = 0; s < kPerByte; ++s) {
    for (int j = 0; j < kRun; ++j) {
      const unsigned v = (static_cast<unsigned>(plane[j]) >> (s * P)) & kMask;
      codes[s * kRun + j] = static_cast<uint8_t>(codes[s * kRun + j] | (v << shift));
    }
  }
}

// A 3-bit unit of R (64 or 32) codes: the 2-bit plane, then bit 2 of code c at bit c of the
// 1-bit plane.
template <int R>
ADPQ_HOST_DEVICE inline void UnpackUnit3Ref(const uint8_t* unit, uint8_t* codes) {
  for (int i = 0; i < R; ++i) codes[i] = 0;
  UnpackPlaneRef<2, R>(unit, 0, codes);
  const uint8_t* bits = unit + R / 4;
  for (int c = 0; c < R; ++c) {
    codes[c] = static_cast<uint8_t>(codes[c] | (((bits[c / 8] >> (c % 8)) & 1u) << 2));
  }
}

// Block `blk` of a packed row of `nblocks` blocks -> 32 codes.
template <int Bits>
ADPQ_HOST_DEVICE inline void UnpackBlockRef(const uint8_t* row, int64_t blk, int64_t nblocks,
                                            uint8_t* codes) {
  static_assert(IsSupportedBits(Bits), "bits must be 2, 3, 4 or 8");
  if constexpr (Bits == 3) {
    const uint8_t* unit = row + Unit3Offset(blk);
    if (Unit3IsPair(blk, nblocks)) {
      uint8_t both[2 * kBlock];
      UnpackUnit3Ref<2 * kBlock>(unit, both);
      for (int i = 0; i < kBlock; ++i) codes[i] = both[(blk % 2) * kBlock + i];
    } else {  // the last block of a row with an odd number of blocks
      UnpackUnit3Ref<kBlock>(unit, codes);
    }
  } else {
    for (int i = 0; i < kBlock; ++i) codes[i] = 0;
    UnpackPlaneRef<Bits>(row + blk * BlockBytes(Bits), 0, codes);
  }
}

// Row n of B^T without outliers: out[k] = (code[k] - zero_points[g]) * scales[g] for k < K.
// `out` holds PaddedK(k) floats; the padding is set to 0 so that a dot product over the padded
// length needs no tail.
template <int Bits>
ADPQ_HOST_DEVICE inline void DequantRowRef(const uint8_t* codes_row, const Half* scales_row,
                                           const uint8_t* zeros_row, int64_t k, int64_t group_size,
                                           float* out) {
  const int64_t blocks = PaddedK(k) / kBlock;
  uint8_t codes[kBlock];
  for (int64_t b = 0; b < blocks; ++b) {
    UnpackBlockRef<Bits>(codes_row, b, blocks, codes);
    const int64_t g = b * kBlock / group_size;  // a block never straddles two groups
    const float scale = HalfToFloat(scales_row[g]);
    const int zero = zeros_row[g];
    float* o = out + b * kBlock;
    for (int i = 0; i < kBlock; ++i) o[i] = static_cast<float>(codes[i] - zero) * scale;
  }
  for (int64_t i = k; i < PaddedK(k); ++i) out[i] = 0.0f;
}

// Adds the outliers [begin, end) of one row: out[idx[i]] += val[i] (* row_scale for int8).
ADPQ_HOST_DEVICE inline float OutlierValue(Half v, float /*row_scale*/) { return HalfToFloat(v); }
ADPQ_HOST_DEVICE inline float OutlierValue(int8_t v, float row_scale) {
  return static_cast<float>(v) * row_scale;
}

template <typename V>
ADPQ_HOST_DEVICE inline void AddOutliersRef(const uint16_t* idx, const V* val, int64_t begin,
                                            int64_t end, float row_scale, float* out) {
  for (int64_t i = begin; i < end; ++i) out[idx[i]] += OutlierValue(val[i], row_scale);
}

}  // namespace adpq

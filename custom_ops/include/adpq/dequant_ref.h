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

// Ors bits [shift, shift + p) of 32 codes from one p-bit plane of 4*p bytes: byte j holds the
// codes j + s*(4p) at bit s*p.
template <int P>
ADPQ_HOST_DEVICE inline void UnpackPlaneRef(const uint8_t* plane, int shift, uint8_t* codes) {
  constexpr int kRun = 4 * P;
  constexpr int kPerByte = 8 / P;
  constexpr unsigned kMask = (1u << P) - 1u;
  for (int s = 0; s < kPerByte; ++s) {
    for (int j = 0; j < kRun; ++j) {
      const unsigned v = (static_cast<unsigned>(plane[j]) >> (s * P)) & kMask;
      codes[s * kRun + j] = static_cast<uint8_t>(codes[s * kRun + j] | (v << shift));
    }
  }
}

// One block of BlockBytes(Bits) bytes -> 32 codes.
template <int Bits>
ADPQ_HOST_DEVICE inline void UnpackBlockRef(const uint8_t* block, uint8_t* codes) {
  static_assert(IsSupportedBits(Bits), "bits must be 2, 3, 4 or 8");
  for (int i = 0; i < kBlock; ++i) codes[i] = 0;
  constexpr Planes kPlanes = PlanesOf(Bits);
  UnpackPlaneRef<kPlanes.width[0]>(block, 0, codes);
  if constexpr (kPlanes.count == 2) {
    UnpackPlaneRef<kPlanes.width[1]>(block + 4 * kPlanes.width[0], kPlanes.width[0], codes);
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
    UnpackBlockRef<Bits>(codes_row + b * BlockBytes(Bits), codes);
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

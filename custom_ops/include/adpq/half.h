// IEEE 754 binary16 <-> binary32 conversions on raw bits, portable (no F16C, no _Float16), so
// that the layout headers need neither ORT's nor CUDA's half types. Float -> half rounds to
// nearest, ties to even, like numpy's astype(np.float16): finite values >= 65520 become inf,
// values below half's normal range become subnormals, NaN stays NaN.
#pragma once

#include <cstdint>
#include <cstring>

#include "adpq/format.h"

namespace adpq {

using Half = uint16_t;  // float16 as stored in tensors

ADPQ_HOST_DEVICE inline float BitsToFloat(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

ADPQ_HOST_DEVICE inline uint32_t FloatToBits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

ADPQ_HOST_DEVICE inline float HalfToFloat(Half h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return BitsToFloat(sign | 0x7f800000u | (mant << 13));  // inf, NaN
  if (exp == 0) {
    // Zero or subnormal: mant * 2^-24 is exact in float.
    const float v = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return BitsToFloat(sign | FloatToBits(v));
  }
  return BitsToFloat(sign | ((exp + 112u) << 23) | (mant << 13));  // rebias 15 -> 127
}

// x >> shift, rounded to nearest, ties to even (shift >= 1).
ADPQ_HOST_DEVICE inline uint32_t ShiftRightRne(uint32_t x, uint32_t shift) {
  const uint32_t q = x >> shift;
  const uint32_t rem = x & ((1u << shift) - 1u);
  const uint32_t halfway = 1u << (shift - 1);
  return q + ((rem > halfway || (rem == halfway && (q & 1u))) ? 1u : 0u);
}

ADPQ_HOST_DEVICE inline Half FloatToHalf(float f) {
  const uint32_t x = FloatToBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<Half>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) return static_cast<Half>(sign | 0x7c00u);  // >= 65520: inf
  if (abs < 0x38800000u) {
    // Below 2^-14: a half subnormal mant * 2^-24 (1024 rounds up into the smallest normal).
    const uint32_t e = abs >> 23;
    if (e < 102) return static_cast<Half>(sign);  // < 2^-25: rounds to zero
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    return static_cast<Half>(sign | ShiftRightRne(mant, 126u - e));
  }
  // Normal: rebias the exponent (127 -> 15) and round the 13 dropped mantissa bits; a carry
  // correctly bumps the exponent.
  return static_cast<Half>(sign | ShiftRightRne(abs - 0x38000000u, 13));
}

}  // namespace adpq

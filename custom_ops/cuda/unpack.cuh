// Register-level unpacking of the packed codes (include/adpq/format.h) for the CUDA kernels.
//
// A block of 32 b-bit codes is read as BlockWords(Bits) 32-bit words (little-endian) and
// unpacked into 8 "quads": quad q is a uint32 whose byte i holds code 4q + i. Because a p-bit
// plane keeps codes j + s*(4p) in byte j at bit s*p, one shift-and-mask of one word yields a
// whole quad of consecutive codes, so a quad lines up with 4 consecutive elements of A (one
// 8- or 16-byte load):
//
//   bits 2 (one 2-bit plane, words w0 w1):  quad 2s + i = (w_i >> 2s) & 0x03030303     s < 4
//   bits 3 (units of two blocks, format.h; 5 words: w0..w3 the 2-bit codes, w4 bit 2):
//           quad 4t + i = (w_i >> 2t) & 0x03030303 (t < 2), plus bits 4q .. 4q + 3 of w4
//           spread to bit 2 of the quad's bytes. For block h of a unit of two, w_i is word i
//           of the unit's 16-byte 2-bit plane shifted right by 4h (its codes j + 16s, s = 2h
//           and 2h + 1); for a row's last, lone block, whose 8-byte plane holds codes j + 8s,
//           LoadBlockWords regroups the bit pairs into the same form. w4 is the block's 32 bits
//           of the 1-bit plane (bit c = code c).
//   bits 4 (one 4-bit plane, w0..w3):       quad 4s + i = (w_i >> 4s) & 0x0f0f0f0f     s < 2
//   bits 8 (w0..w7):                        quad i = w_i
//
// A code becomes a float with one byte permute: 0x4b0000cc is 2^23 + c exactly, so
// (that - (2^23 + z)) is (c - z) exactly, and * scale rounds once, exactly like the reference
// (dequant_ref.h) and numpy. No integer-to-float conversion instruction is needed.
//
// Everything here is __host__ __device__: custom_ops/cuda/test/unpack_test.cc checks it
// against dequant_ref.h on the CPU, so the bit manipulation is tested where no GPU is present.
#pragma once

#include <cstdint>
#include <cstring>

#include "adpq/format.h"

#if defined(__CUDACC__)
#define ADPQ_INLINE __forceinline__
#else
#define ADPQ_INLINE inline
#endif
// Unrolls in the device pass only (the host compiler, -Wall, would warn about the pragma).
#if defined(__CUDA_ARCH__)
#define ADPQ_UNROLL _Pragma("unroll")
#else
#define ADPQ_UNROLL
#endif

namespace adpq::cuda {

inline constexpr float kMagic = 8388608.0f;  // 2^23: float(0x4b000000)
inline constexpr uint32_t kMagicBits = 0x4b000000u;

// __byte_perm(x, y, s): byte i of the result is byte (s >> 4i) & 7 of the 8 bytes {y:x}.
ADPQ_HOST_DEVICE ADPQ_INLINE uint32_t BytePerm(uint32_t x, uint32_t y, uint32_t s) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(x, y, s);
#else
  const uint64_t v = (static_cast<uint64_t>(y) << 32) | x;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t sel = (s >> (4 * i)) & 7u;
    r |= static_cast<uint32_t>((v >> (8 * sel)) & 0xffu) << (8 * i);
  }
  return r;
#endif
}

ADPQ_HOST_DEVICE ADPQ_INLINE float AsFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#endif
}

// 2^23 + (byte I of quad): result bytes = {quad byte I, 0, 0, 0x4b}.
template <int I>
ADPQ_HOST_DEVICE ADPQ_INLINE float MagicCode(uint32_t quad) {
  static_assert(I >= 0 && I < 4, "a quad has 4 codes");
  return AsFloat(BytePerm(quad, kMagicBits, 0x7540u + I));
}

// 32-bit words a block is read as.
ADPQ_HOST_DEVICE constexpr int BlockWords(int bits) { return bits == 3 ? 5 : bits; }

// The 8 quads of one block from its BlockWords(Bits) words.
template <int Bits>
ADPQ_HOST_DEVICE ADPQ_INLINE void UnpackQuads(const uint32_t (&w)[BlockWords(Bits)],
                                              uint32_t (&q)[8]) {
  static_assert(IsSupportedBits(Bits), "bits must be 2, 3, 4 or 8");
  if constexpr (Bits == 2) {
    ADPQ_UNROLL
    for (int s = 0; s < 4; ++s) {
      ADPQ_UNROLL
      for (int i = 0; i < 2; ++i) q[2 * s + i] = (w[i] >> (2 * s)) & 0x03030303u;
    }
  } else if constexpr (Bits == 3) {
    ADPQ_UNROLL
    for (int t = 0; t < 2; ++t) {
      ADPQ_UNROLL
      for (int i = 0; i < 4; ++i) {
        const int quad = 4 * t + i;
        // Bits 4q .. 4q + 3 of w4 to bit 0 of bytes 0 .. 3 (no carries: 4 bits, 7 apart).
        const uint32_t nib = (w[4] >> (4 * quad)) & 0xfu;
        const uint32_t hi = (nib * 0x00204081u) & 0x01010101u;
        q[quad] = ((w[i] >> (2 * t)) & 0x03030303u) | (hi << 2);
      }
    }
  } else if constexpr (Bits == 4) {
    ADPQ_UNROLL
    for (int i = 0; i < 4; ++i) {
      q[i] = w[i] & 0x0f0f0f0fu;
      q[4 + i] = (w[i] >> 4) & 0x0f0f0f0fu;
    }
  } else {
    ADPQ_UNROLL
    for (int i = 0; i < 8; ++i) q[i] = w[i];
  }
}

ADPQ_HOST_DEVICE ADPQ_INLINE uint32_t LoadWord(const uint8_t* p) {
#if defined(__CUDA_ARCH__)
  return __ldg(reinterpret_cast<const uint32_t*>(p));
#else
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
#endif
}

// Loads the words of block `blk` of a packed row of `nblocks` blocks. Rows are whole blocks and
// ORT's tensors are at least 16-byte aligned, so a 2- and 4-bit block is one 8- or 16-byte
// load, 8-bit two 16-byte loads; 3-bit units (24 bytes) are 4-byte aligned: five 4-byte loads.
template <int Bits>
ADPQ_HOST_DEVICE ADPQ_INLINE void LoadBlockWords(const uint8_t* row, int64_t blk, int64_t nblocks,
                                                 uint32_t (&w)[BlockWords(Bits)]) {
  if constexpr (Bits == 3) {
    const uint8_t* unit = row + Unit3Offset(blk);
    if (Unit3IsPair(blk, nblocks)) {  // half h of a unit of two blocks
      const int h = static_cast<int>(blk & 1);
      ADPQ_UNROLL
      for (int i = 0; i < 4; ++i) w[i] = LoadWord(unit + 4 * i) >> (4 * h);
      w[4] = LoadWord(unit + 16 + 4 * h);
    } else {  // a row's last, lone block: plane words L0, L1 hold codes j + 8s at bits 2s
      const uint32_t l0 = LoadWord(unit);
      const uint32_t l1 = LoadWord(unit + 4);
      // w_i (i < 4) takes the bit pairs s = i / 2 and i / 2 + 2 of L_{i % 2} (codes
      // 4i + 16t + j), at bits 0-1 and 2-3 of each byte: then (w_i >> 2t) & 3 is quad 4t + i.
      ADPQ_UNROLL
      for (int i = 0; i < 4; ++i) {
        const uint32_t l = (i % 2 ? l1 : l0) >> (2 * (i / 2));
        w[i] = (l & 0x03030303u) | ((l >> 2) & 0x0c0c0c0cu);
      }
      w[4] = LoadWord(unit + 8);
    }
    return;
  }
  const uint8_t* block = row + blk * BlockBytes(Bits);
#if defined(__CUDA_ARCH__)
  if constexpr (Bits == 2) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(block));
    w[0] = v.x;
    w[1] = v.y;
  } else {
    ADPQ_UNROLL
    for (int h = 0; h < Bits / 4; ++h) {
      const uint4 v = __ldg(reinterpret_cast<const uint4*>(block) + h);
      w[4 * h + 0] = v.x;
      w[4 * h + 1] = v.y;
      w[4 * h + 2] = v.z;
      w[4 * h + 3] = v.w;
    }
  }
#else
  std::memcpy(w, block, sizeof(uint32_t) * Bits);
#endif
}

}  // namespace adpq::cuda

// Host test of the CUDA kernels' register unpacking (cuda/unpack.cuh) against the scalar
// reference (include/adpq/dequant_ref.h): every bit width, random blocks, every code and zero
// point. It needs no GPU: the same __host__ __device__ code runs here. Built with ADPQ_CUDA=ON
// as adpq_cuda_unpack_test; `ctest --test-dir build-cuda` or run it directly (exit code 0: ok).
#include "cuda/unpack.cuh"

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>

#include "adpq/dequant_ref.h"
#include "adpq/format.h"
#include "adpq/half.h"

namespace {

int failures = 0;

void Expect(bool ok, const char* what, int bits, int trial, int i) {
  if (!ok && failures++ < 20) {
    std::printf("FAIL %s: bits=%d trial=%d code=%d\n", what, bits, trial, i);
  }
}

float CodeOf(uint32_t quad, int i) {
  using adpq::cuda::MagicCode;
  switch (i) {
    case 0: return MagicCode<0>(quad) - adpq::cuda::kMagic;
    case 1: return MagicCode<1>(quad) - adpq::cuda::kMagic;
    case 2: return MagicCode<2>(quad) - adpq::cuda::kMagic;
    default: return MagicCode<3>(quad) - adpq::cuda::kMagic;
  }
}

// Rows of 1 .. 5 blocks (3 bits: units of two, and a last lone block when the count is odd).
template <int Bits>
void TestBlocks(std::mt19937& gen) {
  std::uniform_int_distribution<int> byte(0, 255);
  for (int trial = 0; trial < 2000; ++trial) {
    const int64_t nblocks = 1 + trial % 5;
    uint8_t row[5 * adpq::BlockBytes(Bits)];
    for (uint8_t& v : row) v = static_cast<uint8_t>(byte(gen));
    for (int64_t blk = 0; blk < nblocks; ++blk) {
      uint8_t ref[adpq::kBlock];
      adpq::UnpackBlockRef<Bits>(row, blk, nblocks, ref);
      uint32_t w[adpq::cuda::BlockWords(Bits)];
      adpq::cuda::LoadBlockWords<Bits>(row, blk, nblocks, w);
      uint32_t q[8];
      adpq::cuda::UnpackQuads<Bits>(w, q);
      for (int i = 0; i < adpq::kBlock; ++i) {
        const uint32_t code = (q[i / 4] >> (8 * (i % 4))) & 0xffu;
        Expect(code == ref[i], "quad byte", Bits, trial, i);
        Expect(CodeOf(q[i / 4], i % 4) == static_cast<float>(ref[i]), "magic float", Bits, trial,
               i);
      }
    }
  }
}

// (magic(code) - (2^23 + z)) * s is bit-identical to the reference's (code - z) * s.
void TestDequantFormula(std::mt19937& gen) {
  std::uniform_real_distribution<float> scale(-2.0f, 2.0f);
  for (int trial = 0; trial < 200; ++trial) {
    const float s = adpq::HalfToFloat(adpq::FloatToHalf(scale(gen)));
    for (int z = 0; z < 256; ++z) {
      for (int code = 0; code < 256; ++code) {
        const uint32_t quad = static_cast<uint32_t>(code);
        const float zf = adpq::cuda::kMagic + static_cast<float>(z);
        const float got = (adpq::cuda::MagicCode<0>(quad) - zf) * s;
        const float want = static_cast<float>(code - z) * s;
        uint32_t gb, wb;
        std::memcpy(&gb, &got, 4);
        std::memcpy(&wb, &want, 4);
        Expect(gb == wb, "dequant formula", 8, trial, code);
      }
    }
  }
}

}  // namespace

int main() {
  std::mt19937 gen(20241123);
  TestBlocks<2>(gen);
  TestBlocks<3>(gen);
  TestBlocks<4>(gen);
  TestBlocks<8>(gen);
  TestDequantFormula(gen);
  if (failures != 0) {
    std::printf("%d failures\n", failures);
    return 1;
  }
  std::printf("unpack.cuh agrees with dequant_ref.h for bits 2, 3, 4, 8\n");
  return 0;
}

// The AVX2 + FMA + F16C variant (compiled with those target flags; see CMakeLists.txt).
#if defined(__x86_64__) || defined(_M_X64)
#define ADPQ_DENSE_FN DenseAvx2
#define ADPQ_SCRATCH_FN ScratchAvx2
#define ADPQ_OUTLIERS_FN OutliersAvx2
#define ADPQ_QUANT_FN QuantizeGroupAvx2
#include "cpu/kernels_x86.inc"

namespace adpq::cpu {

void HalfToFloatAvx2(const Half* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

}  // namespace adpq::cpu
#endif

// The AVX-512 (F/BW/VL/DQ) + VNNI variant (compiled with those target flags; see CMakeLists.txt).
#if defined(__x86_64__) || defined(_M_X64)
#define ADPQ_AVX512 1
#define ADPQ_DENSE_FN DenseAvx512
#define ADPQ_SCRATCH_FN ScratchAvx512
#define ADPQ_OUTLIERS_FN OutliersAvx512
#define ADPQ_QUANT_FN QuantizeGroupAvx512
#include "cpu/kernels_x86.inc"

namespace adpq::cpu {
bool AmxCompiled() {
#if defined(ADPQ_AMX)
  return true;
#else
  return false;
#endif
}
}  // namespace adpq::cpu
#else
namespace adpq::cpu {
bool AmxCompiled() { return false; }
}  // namespace adpq::cpu
#endif

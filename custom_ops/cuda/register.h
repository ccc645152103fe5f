// CUDA kernels of the op library. Without ADPQ_WITH_CUDA (the CMake option ADPQ_CUDA is off, or
// no CUDA compiler or kernels were found) RegisterOps is an inline no-op, so register.cc and
// the CPU-only build stay the same.
#pragma once

#include <onnxruntime_c_api.h>

namespace adpq::cuda {

#if defined(ADPQ_WITH_CUDA) && ADPQ_WITH_CUDA
void RegisterOps(const OrtApi& api, OrtCustomOpDomain* domain);
#else
inline void RegisterOps(const OrtApi& /*api*/, OrtCustomOpDomain* /*domain*/) {}
#endif

}  // namespace adpq::cuda

// CPU kernels of the op library: cpu::RegisterOps adds them to the library's domain.
#pragma once

#include <onnxruntime_c_api.h>

namespace adpq::cpu {

// Adds the CPU AdpQMatMul to `domain`; throws Ort::Exception on failure. The op objects have
// static storage: ORT keeps pointers to them for as long as sessions use the domain.
void RegisterOps(const OrtApi& api, OrtCustomOpDomain* domain);

}  // namespace adpq::cpu

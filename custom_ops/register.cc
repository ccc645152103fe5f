// The library's only exported symbol (see version.lds): ORT calls RegisterCustomOps when a
// session's options load this library (SessionOptions.register_custom_ops_library in Python).
//
// The library never links libonnxruntime: ORT passes its API table here, so one build works
// with any runtime whose API version is at least that of the headers it was compiled against
// (ORT_API_VERSION, 21 for the 1.21 headers).
// ORT_API_MANUAL_INIT is defined for every file by CMake: the C++ wrapper's API pointer is set
// here (Ort::InitApi) instead of from OrtGetApiBase(), a symbol this library does not link.
#include "cpu/register.h"

#include <onnxruntime_cxx_api.h>

#include <mutex>

#include "adpq/format.h"
#include "common/error.h"
#include "cuda/register.h"

#define ADPQ_EXPORT __attribute__((visibility("default")))
#define ADPQ_STR_(x) #x
#define ADPQ_STR(x) ADPQ_STR_(x)

namespace {

// One domain for the whole process, built on first use and deliberately never released: every
// session that registers the library points at it, and ORT only borrows it.
OrtCustomOpDomain* Domain(const OrtApi& api) {
  static std::mutex mutex;
  static OrtCustomOpDomain* domain = nullptr;
  std::lock_guard<std::mutex> lock(mutex);
  if (domain == nullptr) {
    OrtCustomOpDomain* d = nullptr;
    Ort::ThrowOnError(api.CreateCustomOpDomain(adpq::kAdpqDomain, &d));
    try {
      adpq::cpu::RegisterOps(api, d);
      adpq::cuda::RegisterOps(api, d);
    } catch (...) {
      api.ReleaseCustomOpDomain(d);
      throw;
    }
    domain = d;
  }
  return domain;
}

}  // namespace

extern "C" ADPQ_EXPORT OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                 const OrtApiBase* api_base) {
  if (api_base == nullptr) return nullptr;  // nothing to report an error with
  const OrtApi* api = api_base->GetApi(ORT_API_VERSION);
  if (api == nullptr) {
    // A runtime older than our headers; version 1 of the API can still say so.
    const OrtApi* v1 = api_base->GetApi(1);
    if (v1 == nullptr) return nullptr;
    return v1->CreateStatus(
        ORT_FAIL,
        "adpq_onnx custom ops: this ONNX Runtime is older than the headers the "
        "library was built with (ORT_API_VERSION " ADPQ_STR(ORT_API_VERSION) ")");
  }
  Ort::InitApi(api);
  return adpq::StatusFromExceptions(
      *api, [&] { Ort::ThrowOnError(api->AddCustomOpDomain(options, Domain(*api))); });
}

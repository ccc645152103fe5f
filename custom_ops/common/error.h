// Errors of the op library: kernels throw, the ORT entry points (CreateKernelV2, ComputeV2,
// RegisterCustomOps) turn every exception into an OrtStatus. Nothing may unwind into ORT's C
// frames, and bad input must never crash the process.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace adpq {

// Bad inputs or attributes of a node; becomes ORT_INVALID_ARGUMENT.
class InvalidArgument : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws InvalidArgument with "AdpQMatMul: " followed by the streamed parts.
template <typename... Parts>
[[noreturn]] void Fail(const Parts&... parts) {
  std::ostringstream msg;
  msg << "AdpQMatMul: ";
  (msg << ... << parts);
  throw InvalidArgument(msg.str());
}

// "[2, 3, 64]", for messages.
inline std::string ShapeString(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? ", " : "") << shape[i];
  s << ']';
  return s.str();
}

// Runs fn() and returns nullptr, or an OrtStatus holding the message of what it threw.
template <typename Fn>
OrtStatusPtr StatusFromExceptions(const OrtApi& api, Fn&& fn) noexcept {
  try {
    std::forward<Fn>(fn)();
    return nullptr;
  } catch (const InvalidArgument& e) {
    return api.CreateStatus(ORT_INVALID_ARGUMENT, e.what());
  } catch (const Ort::Exception& e) {
    return api.CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::bad_alloc&) {
    return api.CreateStatus(ORT_FAIL, "AdpQMatMul: out of memory");
  } catch (const std::exception& e) {
    return api.CreateStatus(ORT_FAIL, e.what());
  } catch (...) {
    return api.CreateStatus(ORT_FAIL, "AdpQMatMul: unknown C++ exception");
  }
}

}  // namespace adpq

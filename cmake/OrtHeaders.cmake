# Finds the ONNX Runtime C/C++ API headers (onnxruntime_c_api.h, onnxruntime_cxx_api.h) and
# defines the interface target adpq::ort_headers. ORT's Python wheels ship no headers, so:
#
#   1. ORT_INCLUDE_DIR (CMake cache variable, or the environment variable of that name; pip
#      passes the latter through pyproject.toml): used as given, nothing is downloaded.
#   2. Headers unpacked by an earlier build: <source>/.ortdeps/ort-headers-1.21 or
#      ~/.cache/adpq-onnx/ort-headers-1.21 (XDG_CACHE_HOME is honoured).
#   3. Otherwise tools/fetch_ort_headers.py downloads Debian trixie's libonnxruntime-dev (1.21,
#      85 KB) from the mirror that this machine's apt sources name, with a private apt state,
#      and unpacks it into the first writable of the two directories of step 2.
#
# The headers must provide ORT_API_VERSION >= 17 (KernelContext_ParallelFor). The library asks
# the runtime for exactly that API version, so headers older than the runtime are fine.
set(ADPQ_ORT_HEADERS_VERSION "1.21")
set(ADPQ_ORT_MIN_API_VERSION 17)

set(ORT_INCLUDE_DIR "" CACHE PATH
    "Directory holding onnxruntime_c_api.h; empty: find or download Debian's libonnxruntime-dev")
# The resolved directory; the look-up below reruns at every configure (it is instant once the
# headers are unpacked), so deleting the cache directory never leaves a stale path behind.
set(ADPQ_ORT_INCLUDE_DIR "${ORT_INCLUDE_DIR}")
if(NOT ADPQ_ORT_INCLUDE_DIR AND NOT "$ENV{ORT_INCLUDE_DIR}" STREQUAL "")
  set(ADPQ_ORT_INCLUDE_DIR "$ENV{ORT_INCLUDE_DIR}")
endif()

if(NOT ADPQ_ORT_INCLUDE_DIR)
  if(NOT "$ENV{XDG_CACHE_HOME}" STREQUAL "")
    set(_adpq_user_cache "$ENV{XDG_CACHE_HOME}")
  elseif(NOT "$ENV{HOME}" STREQUAL "")
    set(_adpq_user_cache "$ENV{HOME}/.cache")
  endif()
  set(_adpq_dests "${PROJECT_SOURCE_DIR}/.ortdeps/ort-headers-${ADPQ_ORT_HEADERS_VERSION}")
  if(_adpq_user_cache)
    list(APPEND _adpq_dests "${_adpq_user_cache}/adpq-onnx/ort-headers-${ADPQ_ORT_HEADERS_VERSION}")
  endif()

  # scikit-build-core sets Python_EXECUTABLE; a plain CMake build finds an interpreter.
  if(Python_EXECUTABLE)
    set(_adpq_python "${Python_EXECUTABLE}")
  else()
    find_package(Python3 REQUIRED COMPONENTS Interpreter)
    set(_adpq_python "${Python3_EXECUTABLE}")
  endif()
  message(STATUS "adpq: looking for or fetching the ONNX Runtime ${ADPQ_ORT_HEADERS_VERSION} headers")
  execute_process(
    COMMAND "${_adpq_python}" "${PROJECT_SOURCE_DIR}/tools/fetch_ort_headers.py"
            --dest ${_adpq_dests}
    OUTPUT_VARIABLE _adpq_out
    ERROR_VARIABLE _adpq_err
    RESULT_VARIABLE _adpq_rc
    OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _adpq_rc EQUAL 0)
    message(FATAL_ERROR
      "Could not obtain the ONNX Runtime headers:\n${_adpq_err}\n"
      "Point the build at a directory holding onnxruntime_c_api.h and onnxruntime_cxx_api.h "
      "(ONNX Runtime >= 1.17; e.g. include/ of an ORT release archive, or "
      "/usr/include/onnxruntime from libonnxruntime-dev) with -DORT_INCLUDE_DIR=... or the "
      "environment variable ORT_INCLUDE_DIR.")
  endif()
  set(ADPQ_ORT_INCLUDE_DIR "${_adpq_out}")
endif()

if(NOT EXISTS "${ADPQ_ORT_INCLUDE_DIR}/onnxruntime_c_api.h"
   OR NOT EXISTS "${ADPQ_ORT_INCLUDE_DIR}/onnxruntime_cxx_api.h")
  message(FATAL_ERROR "ORT_INCLUDE_DIR=${ADPQ_ORT_INCLUDE_DIR} does not hold "
                      "onnxruntime_c_api.h and onnxruntime_cxx_api.h")
endif()

file(STRINGS "${ADPQ_ORT_INCLUDE_DIR}/onnxruntime_c_api.h" _adpq_api_line
     REGEX "^#define ORT_API_VERSION [0-9]+")
string(REGEX REPLACE "^#define ORT_API_VERSION ([0-9]+).*" "\\1" ADPQ_ORT_API_VERSION
       "${_adpq_api_line}")
if(NOT ADPQ_ORT_API_VERSION OR ADPQ_ORT_API_VERSION LESS ADPQ_ORT_MIN_API_VERSION)
  message(FATAL_ERROR
    "The ONNX Runtime headers in ${ADPQ_ORT_INCLUDE_DIR} have ORT_API_VERSION "
    "'${ADPQ_ORT_API_VERSION}'; ${ADPQ_ORT_MIN_API_VERSION} or newer is needed.")
endif()
message(STATUS "adpq: ONNX Runtime headers: ${ADPQ_ORT_INCLUDE_DIR} (API version ${ADPQ_ORT_API_VERSION})")

add_library(adpq_ort_headers INTERFACE)
add_library(adpq::ort_headers ALIAS adpq_ort_headers)
target_include_directories(adpq_ort_headers SYSTEM INTERFACE "${ADPQ_ORT_INCLUDE_DIR}")

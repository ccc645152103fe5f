# Decides ADPQ_WITH_CUDA from the ADPQ_CUDA option: ON only when asked for, a CUDA compiler is
# found and custom_ops/cuda has kernels. Otherwise the build says why and stays CPU-only
# (cuda/register.h then compiles to a no-op).
set(ADPQ_WITH_CUDA OFF)
if(ADPQ_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(NOT CMAKE_CUDA_COMPILER)
    message(WARNING
      "ADPQ_CUDA=ON but no CUDA compiler was found (put nvcc on PATH or set CUDACXX); "
      "building the CPU kernels only.")
  elseif(NOT EXISTS "${PROJECT_SOURCE_DIR}/custom_ops/cuda/adpq_matmul.cc")
    message(WARNING
      "ADPQ_CUDA=ON and ${CMAKE_CUDA_COMPILER} was found, but custom_ops/cuda has no kernels "
      "yet; building the CPU kernels only.")
  else()
    # Ampere (sm_80, also runs on sm_86/sm_89) and Hopper (sm_90) machine code, plus sm_90 PTX
    # that newer GPUs compile when the library loads. The kernels need sm_80 (cp.async, bf16
    # tensor cores). Override with -DCMAKE_CUDA_ARCHITECTURES=... or the CUDAARCHS variable.
    if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES AND NOT DEFINED ENV{CUDAARCHS})
      set(CMAKE_CUDA_ARCHITECTURES "80-real;90-real;90-virtual")
    endif()
    enable_language(CUDA)
    set(ADPQ_WITH_CUDA ON)
    message(STATUS "adpq: building the CUDA kernels with ${CMAKE_CUDA_COMPILER} "
                   "for ${CMAKE_CUDA_ARCHITECTURES}")
  endif()
endif()

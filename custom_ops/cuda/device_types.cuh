// Element types of A, bias and Y in the CUDA kernels (float, __half, __nv_bfloat16): float
// conversions, 4-element vector loads and packed stores. CUDA C++ only (.cu files).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace adpq::cuda {

__device__ __forceinline__ float ToFloat(float v) { return v; }
__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }
__device__ __forceinline__ float ToFloat(__nv_bfloat16 v) { return __bfloat162float(v); }

// Rounds to nearest even, like the CPU kernel's FloatToHalf and numpy's astype.
template <typename T>
__device__ __forceinline__ T FromFloat(float v);
template <>
__device__ __forceinline__ float FromFloat<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half FromFloat<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 FromFloat<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// float16 stored as its bits (scales, outlier values and scales are uint16 tensors to the host).
__device__ __forceinline__ float HalfBits(uint16_t bits) {
  return __half2float(__ushort_as_half(bits));
}

// x[0..3] = p[0..3] as float; p aligned to 4 elements (16 bytes for float, 8 for 16-bit types).
__device__ __forceinline__ void Load4(const float* p, float (&x)[4]) {
  const float4 v = __ldg(reinterpret_cast<const float4*>(p));
  x[0] = v.x;
  x[1] = v.y;
  x[2] = v.z;
  x[3] = v.w;
}
__device__ __forceinline__ void Load4(const __half* p, float (&x)[4]) {
  const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
  const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&u.x));
  const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&u.y));
  x[0] = lo.x;
  x[1] = lo.y;
  x[2] = hi.x;
  x[3] = hi.y;
}
__device__ __forceinline__ void Load4(const __nv_bfloat16* p, float (&x)[4]) {
  const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
  const float2 lo = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.x));
  const float2 hi = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&u.y));
  x[0] = lo.x;
  x[1] = lo.y;
  x[2] = hi.x;
  x[3] = hi.y;
}

// Four floats rounded to a 16-bit type and packed into 8 bytes (element 0 in the low half).
template <typename T>
__device__ __forceinline__ uint2 Pack4(float a, float b, float c, float d);
template <>
__device__ __forceinline__ uint2 Pack4<__half>(float a, float b, float c, float d) {
  const __half2 lo = __floats2half2_rn(a, b);
  const __half2 hi = __floats2half2_rn(c, d);
  return make_uint2(*reinterpret_cast<const uint32_t*>(&lo),
                    *reinterpret_cast<const uint32_t*>(&hi));
}
template <>
__device__ __forceinline__ uint2 Pack4<__nv_bfloat16>(float a, float b, float c, float d) {
  const __nv_bfloat162 lo = __floats2bfloat162_rn(a, b);
  const __nv_bfloat162 hi = __floats2bfloat162_rn(c, d);
  return make_uint2(*reinterpret_cast<const uint32_t*>(&lo),
                    *reinterpret_cast<const uint32_t*>(&hi));
}

// Value of outlier i of a row: float16 value, or int8 code times the row's float16 scale.
__device__ __forceinline__ float OutlierAt(const void* val, bool int8, int64_t i, float row_scale) {
  if (int8) return static_cast<float>(__ldg(static_cast<const int8_t*>(val) + i)) * row_scale;
  return HalfBits(__ldg(static_cast<const uint16_t*>(val) + i));
}

}  // namespace adpq::cuda

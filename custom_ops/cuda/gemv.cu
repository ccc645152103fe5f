// The GEMV kernel (decode, and the fallback for any M): see adpq_matmul_impl.cuh.
//
// Work split: warp w of thread block (bx, by) owns output channels n0 .. n0 + kGemvCols - 1
// (n0 = (bx * kGemvWarps + w) * kGemvCols) for rows m0 .. m0 + MT - 1 of A (m0 = by * MT).
// Lane l takes blocks l, l + 32, ... of those channels' packed rows, so each warp-wide load of
// codes is one contiguous run of 32 blocks (256-1024 bytes) per channel; the next block's codes,
// scale and zero point are loaded before the current one is used. Per block and channel:
//
//   d[r] = sum_{i < 32} A[r, 32b + i] * (code_i - z)      (exact integer weights, fp32 FMA)
//   acc[r] += s * d[r]
//
// which equals the reference's sum of A * ((code - z) * s) up to fp32 rounding order. Each
// channel's 8-16 bytes of codes per block are used for MT rows, and each element of A loaded
// (through L1: A is small and read by every warp) is used for kGemvCols channels.
// Then every lane adds a strided share of the channel's outliers (CSR row n), the warp reduces
// by shuffles, and one lane per (channel, row) adds bias and stores Y.
#include "cuda/adpq_matmul_impl.cuh"
#include "cuda/device_types.cuh"
#include "cuda/unpack.cuh"

namespace adpq::cuda {
namespace {

struct GemvParams {
  LaunchArgs g;
  int64_t m0 = 0;      // first row of A of this launch (grids are at most 65535 high)
  bool a_vec = false;  // rows of A can be read 4 elements at a time (aligned, K % 4 == 0)
};

// d[c][r] += sum over one block of A[r, k0 + i] * (code_i - z_c), codes as 8 quads per channel.
// kVec: the block lies inside K and A is aligned (vector loads); otherwise elements past K
// read as 0, which cancels the padding codes.
template <int Bits, typename T, int MT, bool kVec>
__device__ __forceinline__ void BlockDot(const T* const (&arow)[MT], int64_t k0, int64_t k,
                                         const uint32_t (&q)[kGemvCols][8],
                                         const float (&zf)[kGemvCols], float (&d)[kGemvCols][MT]) {
#pragma unroll
  for (int quad = 0; quad < 8; ++quad) {
    const int64_t kq = k0 + 4 * quad;
    float x[MT][4];
#pragma unroll
    for (int r = 0; r < MT; ++r) {
      if constexpr (kVec) {
        Load4(arow[r] + kq, x[r]);
      } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) x[r][i] = kq + i < k ? ToFloat(arow[r][kq + i]) : 0.0f;
      }
    }
#pragma unroll
    for (int c = 0; c < kGemvCols; ++c) {
      const uint32_t qc = q[c][quad];
      const float w0 = MagicCode<0>(qc) - zf[c];
      const float w1 = MagicCode<1>(qc) - zf[c];
      const float w2 = MagicCode<2>(qc) - zf[c];
      const float w3 = MagicCode<3>(qc) - zf[c];
#pragma unroll
      for (int r = 0; r < MT; ++r) {
        float s = d[c][r];
        s = fmaf(x[r][0], w0, s);
        s = fmaf(x[r][1], w1, s);
        s = fmaf(x[r][2], w2, s);
        s = fmaf(x[r][3], w3, s);
        d[c][r] = s;
      }
    }
  }
}

template <int Bits, typename T, int MT>
__global__ void __launch_bounds__(kGemvWarps * 32) GemvKernel(const GemvParams p) {
  constexpr int C = kGemvCols;
  const LaunchArgs& g = p.g;
  const int lane = static_cast<int>(threadIdx.x & 31u);
  const int64_t n0 = (static_cast<int64_t>(blockIdx.x) * kGemvWarps + (threadIdx.x >> 5)) * C;
  if (n0 >= g.n) return;  // the whole warp
  const int64_t m0 = p.m0 + static_cast<int64_t>(blockIdx.y) * MT;
  const int rows = static_cast<int>(g.m - m0 < MT ? g.m - m0 : MT);

  // Rows past `rows` and channels past N alias the last valid one: the same loads and
  // arithmetic, never stored. This keeps branches out of the inner loop.
  const T* const a = static_cast<const T*>(g.a);
  const T* arow[MT];
#pragma unroll
  for (int r = 0; r < MT; ++r) arow[r] = a + (m0 + (r < rows ? r : rows - 1)) * g.k;
  int64_t col[C];
  const uint8_t* crow[C];
#pragma unroll
  for (int c = 0; c < C; ++c) {
    col[c] = n0 + c < g.n ? n0 + c : g.n - 1;
    crow[c] = g.codes + col[c] * g.row_bytes;
  }

  float acc[C][MT];
#pragma unroll
  for (int c = 0; c < C; ++c) {
#pragma unroll
    for (int r = 0; r < MT; ++r) acc[c][r] = 0.0f;
  }

  // Software pipeline: the codes, scale and zero point of block b + 32 are in flight while
  // block b is computed.
  const int64_t nb = g.n_blocks;
  const int64_t full_blocks = g.k / kBlock;  // blocks entirely inside K
  uint32_t w[C][BlockWords(Bits)];
  uint16_t sbits[C];
  uint8_t zero[C];
  auto load = [&](int64_t b) {
    const int64_t grp = b * kBlock / g.group_size;
#pragma unroll
    for (int c = 0; c < C; ++c) {
      LoadBlockWords<Bits>(crow[c], b, nb, w[c]);
      sbits[c] = __ldg(g.scales + col[c] * g.n_groups + grp);
      zero[c] = __ldg(g.zeros + col[c] * g.n_groups + grp);
    }
  };
  if (lane < nb) load(lane);
  for (int64_t b = lane; b < nb; b += 32) {
    uint32_t q[C][8];
    float s[C];
    float zf[C];
#pragma unroll
    for (int c = 0; c < C; ++c) {
      UnpackQuads<Bits>(w[c], q[c]);
      s[c] = HalfBits(sbits[c]);
      zf[c] = kMagic + static_cast<float>(zero[c]);
    }
    if (b + 32 < nb) load(b + 32);

    float d[C][MT];
#pragma unroll
    for (int c = 0; c < C; ++c) {
#pragma unroll
      for (int r = 0; r < MT; ++r) d[c][r] = 0.0f;
    }
    if (p.a_vec && b < full_blocks) {
      BlockDot<Bits, T, MT, true>(arow, b * kBlock, g.k, q, zf, d);
    } else {
      BlockDot<Bits, T, MT, false>(arow, b * kBlock, g.k, q, zf, d);
    }
#pragma unroll
    for (int c = 0; c < C; ++c) {
#pragma unroll
      for (int r = 0; r < MT; ++r) acc[c][r] = fmaf(s[c], d[c][r], acc[c][r]);
    }
  }

  // Outliers: lane l takes entries l, l + 32, ... of each channel's CSR row (about 1 % of K,
  // so one or two per lane), gathering A[r, idx] through L1.
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int64_t begin = __ldg(g.outlier_ptr + col[c]);
    const int64_t end = __ldg(g.outlier_ptr + col[c] + 1);
    const float row_scale = g.outlier_int8 ? HalfBits(__ldg(g.outlier_scale + col[c])) : 1.0f;
    for (int64_t i = begin + lane; i < end; i += 32) {
      const int64_t kk = __ldg(g.outlier_idx + i);
      const float v = OutlierAt(g.outlier_val, g.outlier_int8, i, row_scale);
#pragma unroll
      for (int r = 0; r < MT; ++r) acc[c][r] = fmaf(ToFloat(arow[r][kk]), v, acc[c][r]);
    }
  }

#pragma unroll
  for (int c = 0; c < C; ++c) {
#pragma unroll
    for (int r = 0; r < MT; ++r) {
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) {
        acc[c][r] += __shfl_xor_sync(0xffffffffu, acc[c][r], offset);
      }
    }
  }

  static_assert(C * MT <= 32, "one lane stores each (channel, row)");
  const T* const bias = static_cast<const T*>(g.bias);
  T* const y = static_cast<T*>(g.y);
#pragma unroll
  for (int c = 0; c < C; ++c) {
#pragma unroll
    for (int r = 0; r < MT; ++r) {
      if (lane == c * MT + r && n0 + c < g.n && r < rows) {
        float v = acc[c][r];
        if (bias != nullptr) v += ToFloat(bias[n0 + c]);
        y[(m0 + r) * g.n + n0 + c] = FromFloat<T>(v);
      }
    }
  }
}

template <int Bits, typename T, int MT>
cudaError_t Launch(const LaunchArgs& args, cudaStream_t stream) {
  constexpr int kColsPerBlock = kGemvWarps * kGemvCols;
  constexpr int64_t kMaxGridY = 65535;
  GemvParams p;
  p.g = args;
  p.a_vec = args.k % 4 == 0 && reinterpret_cast<uintptr_t>(args.a) % 16 == 0;
  const dim3 block(kGemvWarps * 32);
  const int64_t grid_x = (args.n + kColsPerBlock - 1) / kColsPerBlock;
  const int64_t row_tiles = (args.m + MT - 1) / MT;
  for (int64_t t0 = 0; t0 < row_tiles; t0 += kMaxGridY) {
    p.m0 = t0 * MT;
    const int64_t tiles = row_tiles - t0 < kMaxGridY ? row_tiles - t0 : kMaxGridY;
    const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(tiles));
    GemvKernel<Bits, T, MT><<<grid, block, 0, stream>>>(p);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

// Rows per thread block: the smallest of 1, 2, 4, kGemvRows that covers m (up to kGemvRows).
template <int Bits, typename T>
cudaError_t LaunchRows(const LaunchArgs& args, cudaStream_t stream) {
  if (args.m <= 1) return Launch<Bits, T, 1>(args, stream);
  if (args.m <= 2) return Launch<Bits, T, 2>(args, stream);
  if (args.m <= 4) return Launch<Bits, T, 4>(args, stream);
  return Launch<Bits, T, kGemvRows>(args, stream);
}

template <int Bits>
cudaError_t LaunchType(const LaunchArgs& args, cudaStream_t stream) {
  switch (args.type) {
    case ElemType::kFloat32: return LaunchRows<Bits, float>(args, stream);
    case ElemType::kFloat16: return LaunchRows<Bits, __half>(args, stream);
    case ElemType::kBFloat16: return LaunchRows<Bits, __nv_bfloat16>(args, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t LaunchGemv(const LaunchArgs& args, cudaStream_t stream) {
  switch (args.bits) {
    case 2: return LaunchType<2>(args, stream);
    case 3: return LaunchType<3>(args, stream);
    case 4: return LaunchType<4>(args, stream);
    case 8: return LaunchType<8>(args, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace adpq::cuda

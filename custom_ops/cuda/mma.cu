// The tensor-core kernel (prefill, float16/bfloat16 A): see adpq_matmul_impl.cuh.
//
// Thread block (bx, by, bz): the tile Y[m0 : m0 + BM, n0 : n0 + 128] (m0 = by * BM,
// n0 = bx * 128) over k-tiles [bz * per_split, (bz + 1) * per_split) of 64 codes each (two
// packed blocks per row of B^T, so a k-tile never splits a block and each block has one group).
// 256 threads = 8 warps in a 2 x 4 grid; a warp computes (BM/2) x 32 of the tile as
// (BM/32) x 2 WMMA 16x16x16 fragments with fp32 accumulators.
//
// Shared memory, two stages, each
//   As[BM][72]   A rows, k contiguous        (T; 64 + 8 padding so that the 8 rows a fragment
//   Bs[128][72]  B^T rows (channel n), k      load touches start 4 banks apart: no conflicts)
//                contiguous = B col-major
// and, after the k loop, the fp32 tile [BM][132] for the epilogue (same memory).
//
// Per k-tile: A arrives by cp.async (16 bytes per copy, zero-filled past M and K; an unaligned
// A or K % 8 != 0 takes a plain element-wise copy instead). B: thread t owns row t / 2 of the
// tile and its block t % 2: it loads the block's 4*bits bytes, scale and zero point into
// registers before the tensor cores work on the other stage, then writes (code - z) * s as T
// into Bs and adds the outliers that fall in its block (walking its row's CSR entries with a
// cursor kept across k-tiles, the next index already in a register). So the product sees
// B = dense + sparse, and there is no separate outlier pass.
//
// Epilogue: fragments -> shared fp32 tile -> + bias, round to T, coalesced stores; or, when K is
// split (few tiles for the SMs: small M), atomicAdd into an fp32 workspace [M, N] that
// FinishSplitK turns into Y.
//
// Tuning left for a GPU session: BM/BN/BK, three stages, ldmatrix + mma.sync (or wgmma on
// sm_90a) instead of WMMA, the split rule, a layout of the codes interleaved for the tensor
// cores' fragment order (the format stays as it is; it would be a load-time repack).
#include <mma.h>

#include "adpq/format.h"
#include "cuda/adpq_matmul_impl.cuh"
#include "cuda/device_types.cuh"
#include "cuda/unpack.cuh"

namespace adpq::cuda {
namespace {

constexpr int kBN = 128;              // output channels per tile
constexpr int kBK = 64;               // codes per k-tile: two blocks
constexpr int kLds = kBK + 8;         // shared row stride of As and Bs, in elements
constexpr int kLdc = kBN + 4;         // shared row stride of the fp32 output tile
constexpr int kThreads = 256;         // 8 warps
constexpr int kMinTilesPerSplit = 4;  // a split shorter than this costs more than it gives
static_assert(kThreads == 2 * kBN, "one thread per (row, block) of the B tile");
static_assert(kBK == 2 * kBlock, "a k-tile is two packed blocks");

template <int BM>
constexpr size_t SmemBytes() {
  const size_t stages = 2 * static_cast<size_t>(BM + kBN) * kLds * 2;
  const size_t out = static_cast<size_t>(BM) * kLdc * sizeof(float);
  return stages > out ? stages : out;
}

struct MmaParams {
  LaunchArgs g;
  float* workspace = nullptr;  // [M, N] fp32 when K is split, else null
  int64_t m0 = 0;              // first row of this launch (grids are at most 65535 high)
  int tiles_per_split = 0;
  bool a_async = false;  // A rows 16-byte aligned and K % 8 == 0: cp.async
};

struct Plan {
  int bm = 128;
  int64_t grid_x = 0;
  int64_t grid_y = 0;
  int splits = 1;
  int tiles_per_split = 0;
};

Plan MakePlan(const LaunchArgs& g) {
  Plan p;
  p.bm = g.m <= 64 ? 64 : 128;
  p.grid_x = (g.n + kBN - 1) / kBN;
  p.grid_y = (g.m + p.bm - 1) / p.bm;
  const int64_t k_tiles = (g.n_blocks + 1) / 2;
  const int64_t tiles = p.grid_x * p.grid_y;
  int64_t splits = 1;
  if (tiles < g.sm_count) {
    // Aim at two thread blocks per SM, never below kMinTilesPerSplit k-tiles each.
    splits = (2 * g.sm_count + tiles - 1) / tiles;
    const int64_t most = k_tiles / kMinTilesPerSplit;
    if (splits > most) splits = most;
    if (splits < 1) splits = 1;
  }
  p.tiles_per_split = static_cast<int>((k_tiles + splits - 1) / splits);
  p.splits = static_cast<int>((k_tiles + p.tiles_per_split - 1) / p.tiles_per_split);
  return p;
}

__device__ __forceinline__ void CpAsync16(void* smem, const void* gmem, bool valid) {
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;  // 0: fill the 16 bytes with zeros
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
__device__ __forceinline__ void CpAsyncWaitAll() { asm volatile("cp.async.wait_group 0;\n" ::); }

template <int Bits, typename T, int BM>
__global__ void __launch_bounds__(kThreads, 2) MmaKernel(const MmaParams p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  constexpr int kWM = BM / 2;   // warp tile rows
  constexpr int kWN = kBN / 4;  // warp tile columns
  constexpr int kFM = kWM / 16;
  constexpr int kFN = kWN / 16;
  constexpr int kStage = (BM + kBN) * kLds;  // elements per stage

  extern __shared__ __align__(128) unsigned char smem[];
  T* const stages = reinterpret_cast<T*>(smem);

  const LaunchArgs& g = p.g;
  const int t = static_cast<int>(threadIdx.x);
  const int warp = t >> 5;
  const int wm = warp >> 2;
  const int wn = warp & 3;
  const int64_t m_base = p.m0 + static_cast<int64_t>(blockIdx.y) * BM;
  const int64_t n_base = static_cast<int64_t>(blockIdx.x) * kBN;
  const int64_t k_tiles = (g.n_blocks + 1) / 2;
  const int64_t kt_begin = static_cast<int64_t>(blockIdx.z) * p.tiles_per_split;
  const int64_t kt_end =
      kt_begin + p.tiles_per_split < k_tiles ? kt_begin + p.tiles_per_split : k_tiles;
  if (kt_begin >= kt_end) return;  // the whole block

  const T* const a = static_cast<const T*>(g.a);

  // --- A tile: BM x 64 elements of rows m_base.., columns k0.. ---
  auto load_a = [&](int64_t kt, T* as) {
    const int64_t k0 = kt * kBK;
    if (p.a_async) {
      constexpr int kChunks = BM * kBK / 8;  // 16-byte chunks
#pragma unroll
      for (int c = t; c < kChunks; c += kThreads) {
        const int r = c >> 3;
        const int c8 = c & 7;
        const int64_t m = m_base + r;
        const int64_t k = k0 + c8 * 8;
        const bool ok = m < g.m && k < g.k;  // K % 8 == 0: a chunk is all in or all out
        CpAsync16(as + r * kLds + c8 * 8, ok ? a + m * g.k + k : a, ok);
      }
      CpAsyncCommit();
    } else {
      for (int e = t; e < BM * kBK; e += kThreads) {
        const int r = e / kBK;
        const int c = e % kBK;
        const int64_t m = m_base + r;
        const int64_t k = k0 + c;
        as[r * kLds + c] = m < g.m && k < g.k ? a[m * g.k + k] : FromFloat<T>(0.0f);
      }
    }
  };

  // --- B tile: this thread's (row, block) ---
  const int b_row = t >> 1;
  const int b_half = t & 1;
  const int64_t n = n_base + b_row;
  const bool row_ok = n < g.n;
  const int64_t nr = row_ok ? n : g.n - 1;
  const uint8_t* const crow = g.codes + nr * g.row_bytes;
  int64_t cursor = row_ok ? __ldg(g.outlier_ptr + nr) : 0;
  const int64_t row_end = row_ok ? __ldg(g.outlier_ptr + nr + 1) : 0;
  if (kt_begin > 0) {
    // A later split of K: binary search for the first outlier at or past its first column,
    // rather than walking (one dependent load per entry) through the earlier ones.
    const int64_t k_start = kt_begin * kBK;
    int64_t hi = row_end;
    while (cursor < hi) {
      const int64_t mid = cursor + (hi - cursor) / 2;
      if (__ldg(g.outlier_idx + mid) < k_start) {
        cursor = mid + 1;
      } else {
        hi = mid;
      }
    }
  }
  const float row_scale = g.outlier_int8 && row_ok ? HalfBits(__ldg(g.outlier_scale + nr)) : 1.0f;
  constexpr int64_t kNoOutlier = int64_t{1} << 40;
  int64_t next_idx = cursor < row_end ? __ldg(g.outlier_idx + cursor) : kNoOutlier;

  uint32_t w[BlockWords(Bits)];
  uint16_t sbits = 0;
  uint8_t zero = 0;
  bool b_ok = false;
  auto load_b = [&](int64_t kt) {
    const int64_t blk = kt * 2 + b_half;
    b_ok = row_ok && blk < g.n_blocks;
    if (b_ok) {
      LoadBlockWords<Bits>(crow, blk, g.n_blocks, w);
      const int64_t grp = blk * kBlock / g.group_size;
      sbits = __ldg(g.scales + nr * g.n_groups + grp);
      zero = __ldg(g.zeros + nr * g.n_groups + grp);
    }
  };
  auto store_b = [&](int64_t kt, T* bs) {
    T* const dst = bs + b_row * kLds + b_half * kBlock;
    if (!b_ok) {
#pragma unroll
      for (int i = 0; i < 4; ++i) reinterpret_cast<uint4*>(dst)[i] = make_uint4(0, 0, 0, 0);
      return;
    }
    const float s = HalfBits(sbits);
    const float zf = kMagic + static_cast<float>(zero);
    uint32_t q[8];
    UnpackQuads<Bits>(w, q);
#pragma unroll
    for (int quad = 0; quad < 8; ++quad) {
      reinterpret_cast<uint2*>(dst)[quad] =
          Pack4<T>((MagicCode<0>(q[quad]) - zf) * s, (MagicCode<1>(q[quad]) - zf) * s,
                   (MagicCode<2>(q[quad]) - zf) * s, (MagicCode<3>(q[quad]) - zf) * s);
    }
    // Outliers inside [lo, lo + 32): indices ascend within a row, so entries before lo belong
    // to blocks of the other thread of this row (or of earlier splits) and are skipped.
    const int64_t lo = (kt * 2 + b_half) * kBlock;
    while (next_idx < lo + kBlock) {
      if (next_idx >= lo) {
        T* const e = dst + (next_idx - lo);
        *e =
            FromFloat<T>(ToFloat(*e) + OutlierAt(g.outlier_val, g.outlier_int8, cursor, row_scale));
      }
      ++cursor;
      next_idx = cursor < row_end ? __ldg(g.outlier_idx + cursor) : kNoOutlier;
    }
  };

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[kFM][kFN];
#pragma unroll
  for (int i = 0; i < kFM; ++i) {
#pragma unroll
    for (int j = 0; j < kFN; ++j) wmma::fill_fragment(acc[i][j], 0.0f);
  }
  auto compute = [&](const T* as, const T* bs) {
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa[kFM];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb[kFN];
#pragma unroll
      for (int i = 0; i < kFM; ++i) {
        wmma::load_matrix_sync(fa[i], as + (wm * kWM + i * 16) * kLds + kk, kLds);
      }
#pragma unroll
      for (int j = 0; j < kFN; ++j) {
        wmma::load_matrix_sync(fb[j], bs + (wn * kWN + j * 16) * kLds + kk, kLds);
      }
#pragma unroll
      for (int i = 0; i < kFM; ++i) {
#pragma unroll
        for (int j = 0; j < kFN; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
      }
    }
  };

  // Prologue: k-tile kt_begin into stage 0.
  load_a(kt_begin, stages);
  load_b(kt_begin);
  store_b(kt_begin, stages + BM * kLds);
  CpAsyncWaitAll();
  __syncthreads();

  // Main loop: stage `cur` is multiplied while k-tile kt + 1 is fetched into the other one.
  // Stage cur ^ 1 was last read in the previous iteration, before its closing barrier.
  int cur = 0;
  for (int64_t kt = kt_begin; kt < kt_end; ++kt) {
    T* const next = stages + (cur ^ 1) * kStage;
    const bool has_next = kt + 1 < kt_end;
    if (has_next) {
      load_a(kt + 1, next);
      load_b(kt + 1);
    }
    compute(stages + cur * kStage, stages + cur * kStage + BM * kLds);
    if (has_next) store_b(kt + 1, next + BM * kLds);
    CpAsyncWaitAll();
    __syncthreads();
    cur ^= 1;
  }

  // Epilogue through shared memory (the stages are free after the last barrier).
  float* const tile = reinterpret_cast<float*>(smem);
#pragma unroll
  for (int i = 0; i < kFM; ++i) {
#pragma unroll
    for (int j = 0; j < kFN; ++j) {
      wmma::store_matrix_sync(tile + (wm * kWM + i * 16) * kLdc + wn * kWN + j * 16, acc[i][j],
                              kLdc, wmma::mem_row_major);
    }
  }
  __syncthreads();
  const T* const bias = static_cast<const T*>(g.bias);
  T* const y = static_cast<T*>(g.y);
  for (int e = t; e < BM * kBN; e += kThreads) {
    const int r = e / kBN;
    const int c = e % kBN;
    const int64_t m = m_base + r;
    const int64_t nn = n_base + c;
    if (m >= g.m || nn >= g.n) continue;
    float v = tile[r * kLdc + c];
    if (p.workspace != nullptr) {
      atomicAdd(p.workspace + m * g.n + nn, v);
    } else {
      if (bias != nullptr) v += ToFloat(bias[nn]);
      y[m * g.n + nn] = FromFloat<T>(v);
    }
  }
#endif
}

// Y = workspace (+ bias), rounded to T.
template <typename T>
__global__ void FinishSplitK(const float* workspace, const T* bias, T* y, int64_t m, int64_t n) {
  const int64_t total = m * n;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v = workspace[i];
    if (bias != nullptr) v += ToFloat(bias[i % n]);
    y[i] = FromFloat<T>(v);
  }
}

template <int Bits, typename T, int BM>
cudaError_t Launch(const LaunchArgs& g, const Plan& plan, float* workspace, cudaStream_t stream) {
  constexpr int64_t kMaxGridY = 65535;
  const auto kernel = MmaKernel<Bits, T, BM>;
  // More than 48 KB of dynamic shared memory must be allowed per function (and per device:
  // the attribute is set on the current one, every launch; it is a cheap host-side call).
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(SmemBytes<BM>()));
  if (err != cudaSuccess) return err;
  MmaParams p;
  p.g = g;
  p.workspace = workspace;
  p.tiles_per_split = plan.tiles_per_split;
  p.a_async = g.k % 8 == 0 && reinterpret_cast<uintptr_t>(g.a) % 16 == 0;
  if (workspace != nullptr) {
    err = cudaMemsetAsync(workspace, 0, static_cast<size_t>(g.m * g.n) * sizeof(float), stream);
    if (err != cudaSuccess) return err;
  }
  for (int64_t y0 = 0; y0 < plan.grid_y; y0 += kMaxGridY) {
    p.m0 = y0 * BM;
    const int64_t rows = plan.grid_y - y0 < kMaxGridY ? plan.grid_y - y0 : kMaxGridY;
    const dim3 grid(static_cast<unsigned>(plan.grid_x), static_cast<unsigned>(rows),
                    static_cast<unsigned>(plan.splits));
    kernel<<<grid, kThreads, SmemBytes<BM>(), stream>>>(p);
    err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (workspace != nullptr) {
    const int64_t total = g.m * g.n;
    const int64_t blocks = (total + 255) / 256 < 4096 ? (total + 255) / 256 : 4096;
    FinishSplitK<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
        workspace, static_cast<const T*>(g.bias), static_cast<T*>(g.y), g.m, g.n);
    err = cudaGetLastError();
  }
  return err;
}

template <int Bits, typename T>
cudaError_t LaunchTile(const LaunchArgs& g, float* workspace, cudaStream_t stream) {
  const Plan plan = MakePlan(g);
  if (plan.bm == 64) return Launch<Bits, T, 64>(g, plan, workspace, stream);
  return Launch<Bits, T, 128>(g, plan, workspace, stream);
}

template <int Bits>
cudaError_t LaunchType(const LaunchArgs& g, float* workspace, cudaStream_t stream) {
  switch (g.type) {
    case ElemType::kFloat16: return LaunchTile<Bits, __half>(g, workspace, stream);
    case ElemType::kBFloat16: return LaunchTile<Bits, __nv_bfloat16>(g, workspace, stream);
    case ElemType::kFloat32: break;  // no fp32 tensor-core path: the host uses the GEMV
  }
  return cudaErrorInvalidValue;
}

}  // namespace

size_t MmaWorkspaceBytes(const LaunchArgs& args) {
  const Plan plan = MakePlan(args);
  return plan.splits > 1 ? static_cast<size_t>(args.m * args.n) * sizeof(float) : 0;
}

cudaError_t LaunchMma(const LaunchArgs& args, void* workspace, cudaStream_t stream) {
  float* const ws = MmaWorkspaceBytes(args) > 0 ? static_cast<float*>(workspace) : nullptr;
  if (MmaWorkspaceBytes(args) > 0 && ws == nullptr) return cudaErrorInvalidValue;
  switch (args.bits) {
    case 2: return LaunchType<2>(args, ws, stream);
    case 3: return LaunchType<3>(args, ws, stream);
    case 4: return LaunchType<4>(args, ws, stream);
    case 8: return LaunchType<8>(args, ws, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace adpq::cuda

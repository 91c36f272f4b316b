// Weight-streaming GEMV (see gemv.h).
//
// One warp per output row; a block of 8 warps covers 8 consecutive rows. Each lane walks the
// row in 16-byte chunks (8 bf16) strided by the warp, issuing U = 4 weight loads before using
// any (several loads in flight per lane hide HBM latency), with the L1-bypassing streaming
// load since each weight byte is read exactly once per step. The activations (n_tokens rows
// of n_in bf16, at most 8 x 28 KB) are re-read by every warp and stay in L1/L2.
#include "kernels/cuda/gemv.h"

#include <string>

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/reduce.cuh"

namespace dspark::cuda {
namespace {

constexpr int k_warps = 8;
constexpr int k_unroll = 4;

__device__ __forceinline__ void store_out(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_out(bf16* p, float v) { *p = to_bf16(v); }

template <int NTOK, typename Out>
__global__ void __launch_bounds__(k_warps * 32)
gemv_kernel(const bf16* __restrict__ w, const bf16* __restrict__ x, int64_t n_out, int64_t n_in,
            Out* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * k_warps + (threadIdx.x >> 5);
  if (row >= n_out) return;
  const bf16* wr = w + row * n_in;
  const int64_t n_chunks = n_in / 8;
  float acc[NTOK];
#pragma unroll
  for (int t = 0; t < NTOK; ++t) acc[t] = 0.f;

  int64_t c = lane;
  for (; c + 32 * (k_unroll - 1) < n_chunks; c += 32 * k_unroll) {
    uint4 wv[k_unroll];
#pragma unroll
    for (int u = 0; u < k_unroll; ++u) wv[u] = load_stream16(wr + (c + 32 * u) * 8);
#pragma unroll
    for (int u = 0; u < k_unroll; ++u) {
      float wf[8];
      unpack8(wv[u], wf);
#pragma unroll
      for (int t = 0; t < NTOK; ++t) {
        float xf[8];
        unpack8(__ldg(reinterpret_cast<const uint4*>(x + t * n_in + (c + 32 * u) * 8)), xf);
#pragma unroll
        for (int k = 0; k < 8; ++k) acc[t] = fmaf(wf[k], xf[k], acc[t]);
      }
    }
  }
  for (; c < n_chunks; c += 32) {  // tail: fewer than k_unroll chunks left for this lane
    float wf[8];
    unpack8(load_stream16(wr + c * 8), wf);
#pragma unroll
    for (int t = 0; t < NTOK; ++t) {
      float xf[8];
      unpack8(__ldg(reinterpret_cast<const uint4*>(x + t * n_in + c * 8)), xf);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[t] = fmaf(wf[k], xf[k], acc[t]);
    }
  }
#pragma unroll
  for (int t = 0; t < NTOK; ++t) {
    const float s = warp_sum(acc[t]);
    if (lane == 0) store_out(y + t * n_out + row, s);
  }
}

template <typename Out>
void launch(const bf16* w, const bf16* x, int64_t n_tokens, int64_t n_out, int64_t n_in, Out* y,
            cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(n_tokens >= 0 && n_tokens <= k_gemv_max_tokens,
                      "gemv_bf16: n_tokens " + std::to_string(n_tokens) + " not in 0..8");
  DSPARK_CUDA_REQUIRE(n_out > 0 && n_in > 0 && n_in % 8 == 0, "gemv_bf16: n_in must be a positive multiple of 8");
  DSPARK_CUDA_REQUIRE(reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0,
                      "gemv_bf16: w and x must be 16-byte aligned");
  if (n_tokens == 0) return;
  const int64_t blocks = (n_out + k_warps - 1) / k_warps;
  DSPARK_CUDA_REQUIRE(blocks <= 0x7fffffff, "gemv_bf16: n_out too large");
  const dim3 grid(static_cast<unsigned>(blocks));
  switch (n_tokens) {
    case 1: gemv_kernel<1, Out><<<grid, k_warps * 32, 0, stream>>>(w, x, n_out, n_in, y); break;
    case 2: gemv_kernel<2, Out><<<grid, k_warps * 32, 0, stream>>>(w, x, n_out, n_in, y); break;
    case 3: gemv_kernel<3, Out><<<grid, k_warps * 32, 0, stream>>>(w, x, n_out, n_in, y); break;
    case 4: gemv_kernel<4, Out><<<grid, k_warps * 32, 0, stream>>>(w, x, n_out, n_in, y); break;
    default: {  // 5..8: run the first 4, then the rest
      gemv_kernel<4, Out><<<grid, k_warps * 32, 0, stream>>>(w, x, n_out, n_in, y);
      DSPARK_CUDA_CHECK_LAUNCH();
      launch(w, x + 4 * n_in, n_tokens - 4, n_out, n_in, y + 4 * n_out, stream);
      return;
    }
  }
  DSPARK_CUDA_CHECK_LAUNCH();
}

}  // namespace

void gemv_bf16(const bf16* w, const bf16* x, int64_t n_tokens, int64_t n_out, int64_t n_in, bf16* y,
               cudaStream_t stream) {
  launch(w, x, n_tokens, n_out, n_in, y, stream);
}
void gemv_bf16(const bf16* w, const bf16* x, int64_t n_tokens, int64_t n_out, int64_t n_in, float* y,
               cudaStream_t stream) {
  launch(w, x, n_tokens, n_out, n_in, y, stream);
}

}  // namespace dspark::cuda

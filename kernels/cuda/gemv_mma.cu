// Tensor-core GEMV for 1..8 token rows (see gemv.h): y = x W^T with mma.sync m16n8k16.
//
// Why: the SIMT kernel (gemv.cu) spends 8 FMAs and the bf16 unpacking on every weight at 8
// tokens, which made an 8-token verify step cost 1.55x a 1-token step on the Qwen3-8B shape
// (H100, docs/results/bench_cuda_kernels4.md) although both read the same 15 GB of weights.
// One mma multiplies a 16-row x 16-feature weight tile by 16 features x 8 tokens, so the
// arithmetic no longer competes with the loads and the step stays bound by the weight read.
//
// Layout. A block owns 16 output rows; its 8 warps split the input features in 32-feature
// k-blocks (warp w takes k-blocks w, w + 8, ...), then add their 16 x 8 partial tiles in
// shared memory in warp order. Lane (g = lane / 4, q = lane % 4) loads 16 bytes (8 features)
// of rows g and g + 8 at feature kb * 32 + q * 8, and the same 8 features of token g's
// activations. The dot product does not care which physical feature sits at which k of the
// mma, only that A and B agree: lane q's features {0,1} / {2,3} go to the mma's k = 2q.. /
// 2q + 8.. slots of the first mma, {4,5} / {6,7} to the second. Tokens >= n_tokens load zeros.
//
// Batch invariance: the tokens are the mma's N columns, computed independently; a token's
// column sees the same k-blocks in the same order, the same mma sequence and the same warp-order
// sum whatever the token count, so its output is bit-identical alone or with up to 7 others.
// (Its bits differ from the SIMT kernel's: the two must not be mixed for one model.)
#include <cuda_bf16.h>

#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/pdl.cuh"

namespace dspark::cuda {
namespace {

constexpr int k_warps = 8;
constexpr int k_rows = 16;    // output rows per block (the mma's M)
constexpr int k_tokens = 8;   // the mma's N
constexpr int k_kblock = 32;  // features per warp step (4 lanes x 8 features)
constexpr int k_unroll = 4;   // k-blocks in flight per warp
constexpr int k_max_prefetch = 32;  // k-blocks per warp pulled into L2 before pdl_wait, at most
// 4 k-blocks per warp = 2 KB of each row (the round-6 kernel measured on the H100); the SIMT
// kernel pulls 4 KB (8 here) and gains 0.39 ms per step from PDL against mma's 0.07.
constexpr int k_default_prefetch = 4;

__device__ __forceinline__ void store_out(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_out(bf16* p, float v) { *p = to_bf16(v); }

// d += A(16x16 bf16) * B(16x8 bf16), f32 accumulators (PTX fragment layout of m16n8k16).
__device__ __forceinline__ void mma_16816(float (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                          uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#else
  __trap();  // built for sm_90 (CMAKE_CUDA_ARCHITECTURES); older targets never dispatch here
#endif
}

template <typename Out>
__global__ void __launch_bounds__(k_warps * 32)
gemv_mma_kernel(const bf16* __restrict__ w, const bf16* __restrict__ x, int n_tokens, int64_t n_out, int64_t n_in,
                int prefetch_kblocks, Out* __restrict__ y) {
  __shared__ float part[k_warps][k_rows][k_tokens];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, q = lane & 3;
  const int64_t row0 = static_cast<int64_t>(blockIdx.x) * k_rows;
  // Rows past n_out (the last tile) re-read the last row and are not stored.
  const bf16* wa = w + min(row0 + g, n_out - 1) * n_in;
  const bf16* wb = w + min(row0 + g + 8, n_out - 1) * n_in;
  const bf16* xt = x + static_cast<int64_t>(min(g, n_tokens - 1)) * n_in;
  const bool token_live = g < n_tokens;
  const int64_t n_kb = (n_in + k_kblock - 1) / k_kblock;

  // Weights do not depend on the previous kernel: pull this warp's first k-blocks into L2
  // while that kernel drains. The depth only moves the time of the reads, never the result
  // (gemv_mma_prefetch_kblocks() says why it is a knob).
  for (int u = 0; u < prefetch_kblocks; ++u) {
    const int64_t f = (warp + k_warps * u) * static_cast<int64_t>(k_kblock) + q * 8;
    if (f < n_in) {
      prefetch_l2(wa + f);
      prefetch_l2(wb + f);
    }
  }
  pdl_wait();  // x is the previous kernel's output; y may still be read by it
  pdl_trigger();

  float d[4] = {0.f, 0.f, 0.f, 0.f};
  const uint4 zero = make_uint4(0, 0, 0, 0);
  for (int64_t kb0 = warp; kb0 < n_kb; kb0 += k_warps * k_unroll) {
    uint4 va[k_unroll], vb[k_unroll], vx[k_unroll];
#pragma unroll
    for (int u = 0; u < k_unroll; ++u) {
      const int64_t f = (kb0 + k_warps * u) * k_kblock + q * 8;
      const bool in = f < n_in;  // n_in % 8 == 0: a 16-byte chunk is all in or all out
      va[u] = in ? load_stream16(wa + f) : zero;
      vb[u] = in ? load_stream16(wb + f) : zero;
      vx[u] = in && token_live ? __ldg(reinterpret_cast<const uint4*>(xt + f)) : zero;
    }
#pragma unroll
    for (int u = 0; u < k_unroll; ++u) {
      if (kb0 + k_warps * u >= n_kb) break;  // warp-uniform
      mma_16816(d, va[u].x, vb[u].x, va[u].y, vb[u].y, vx[u].x, vx[u].y);
      mma_16816(d, va[u].z, vb[u].z, va[u].w, vb[u].w, vx[u].z, vx[u].w);
    }
  }
  // d[0], d[1]: row g, tokens 2q, 2q + 1; d[2], d[3]: row g + 8, the same tokens.
  part[warp][g][2 * q] = d[0];
  part[warp][g][2 * q + 1] = d[1];
  part[warp][g + 8][2 * q] = d[2];
  part[warp][g + 8][2 * q + 1] = d[3];
  __syncthreads();
  if (threadIdx.x < k_rows * k_tokens) {
    const int t = threadIdx.x / k_rows, r = threadIdx.x % k_rows;  // consecutive threads: consecutive rows
    if (t < n_tokens && row0 + r < n_out) {
      float s = 0.f;
#pragma unroll
      for (int v = 0; v < k_warps; ++v) s += part[v][r][t];
      store_out(y + t * n_out + row0 + r, s);
    }
  }
}

template <typename Out>
void launch(const bf16* w, const bf16* x, int64_t n_tokens, int64_t n_out, int64_t n_in, Out* y,
            cudaStream_t stream) {
  check_gemv_args("gemv_bf16_mma", w, x, n_tokens, n_out, n_in);
  if (n_tokens == 0) return;
  const int64_t blocks = (n_out + k_rows - 1) / k_rows;
  DSPARK_CUDA_REQUIRE(blocks <= 0x7fffffff, "gemv_bf16_mma: n_out too large");
  launch_kernel(gemv_mma_kernel<Out>, dim3(static_cast<unsigned>(blocks)), dim3(k_warps * 32), 0, stream, w, x,
                static_cast<int>(n_tokens), n_out, n_in, gemv_mma_prefetch_kblocks(), y);
}

}  // namespace

int gemv_mma_prefetch_kblocks() {
  static const int depth = [] {
    const char* v = std::getenv("DSPARK_MMA_PREFETCH");
    if (v == nullptr || *v == '\0') return k_default_prefetch;
    char* end = nullptr;
    const long n = std::strtol(v, &end, 10);
    if (*end != '\0' || n < 0 || n > k_max_prefetch)
      throw std::invalid_argument(std::string("DSPARK_MMA_PREFETCH must be an integer in 0..") +
                                  std::to_string(k_max_prefetch) + ", not '" + v + "'");
    return static_cast<int>(n);
  }();
  return depth;
}

void gemv_bf16_mma(const bf16* w, const bf16* x, int64_t n_tokens, int64_t n_out, int64_t n_in, bf16* y,
                   cudaStream_t stream) {
  launch(w, x, n_tokens, n_out, n_in, y, stream);
}
void gemv_bf16_mma(const bf16* w, const bf16* x, int64_t n_tokens, int64_t n_out, int64_t n_in, float* y,
                   cudaStream_t stream) {
  launch(w, x, n_tokens, n_out, n_in, y, stream);
}

}  // namespace dspark::cuda

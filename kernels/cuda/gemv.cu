// Weight-streaming GEMV (see gemv.h).
//
// A warp owns ROWS consecutive output rows (ROWS = 1 for 1-2 tokens, 2 for 3-8 tokens, or 4 with
// DSPARK_GEMV_ROWS=4, an A/B variant: the same bits, a quarter of the L1 traffic); a block
// of 8 warps covers 8 * ROWS rows. Each lane walks the rows in 16-byte chunks (8 bf16) strided
// by the warp, issuing U = 4 chunk loads per row before using any (several loads in flight per
// lane hide HBM latency), with the L1-bypassing streaming load since each weight byte is read
// exactly once per step. The activations (n_tokens rows of n_in bf16, at most 8 x 28 KB) are
// re-read by every warp and stay in L1/L2.
//
// Why ROWS = 2 for many tokens: every 16-byte weight chunk needs n_tokens 16-byte activation
// chunks from L1. At 8 tokens and ~3 TB/s of weights that is ~24 TB/s of L1 traffic, close to
// the H100's aggregate L1 rate; a warp that applies each activation chunk to two rows halves it.
// Why ONE pass for 5-8 tokens: the previous version ran tokens 0-3 and 4-7 as two launches,
// reading every weight twice (the 2x step seen in the first H100 results).
//
// Batch invariance: for a given (row, lane) the chunks are visited in increasing order and each
// chunk's 8 products are added in order 0..7, then the same warp_sum tree runs. Neither the
// token count nor ROWS nor the unroll/tail split changes that sequence, so a token's output is
// bit-identical whether it is computed alone or with up to 7 others.
#include "kernels/cuda/gemv.h"

#include <cstdlib>
#include <stdexcept>
#include <string>
#include <string_view>

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/reduce.cuh"

namespace dspark::cuda {
namespace {

constexpr int k_warps = 8;
constexpr int k_unroll = 4;
// Chunks per lane and row pulled into L2 before waiting for the previous kernel (PDL): 8 x 16 B
// x 32 lanes = 4 KB per row, ~35 MB if every resident warp did it, inside the 50 MB L2.
constexpr int k_prefetch = 8;

__device__ __forceinline__ void store_out(float* p, float v) { *p = v; }
__device__ __forceinline__ void store_out(bf16* p, float v) { *p = to_bf16(v); }

// acc[r][t] += w chunk of row r . x chunk of token t, products added in order 0..7.
template <int NTOK, int ROWS>
__device__ __forceinline__ void fma_chunk(const uint4 (&wv)[ROWS], const bf16* __restrict__ x, int64_t n_in,
                                          int64_t c, float (&acc)[ROWS][NTOK]) {
  float wf[ROWS][8];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) unpack8(wv[r], wf[r]);
#pragma unroll
  for (int t = 0; t < NTOK; ++t) {
    float xf[8];
    unpack8(__ldg(reinterpret_cast<const uint4*>(x + t * n_in + c * 8)), xf);
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[r][t] = fmaf(wf[r][k], xf[k], acc[r][t]);
  }
}

template <int NTOK, int ROWS, typename Out>
__global__ void __launch_bounds__(k_warps * 32)
gemv_kernel(const bf16* __restrict__ w, const bf16* __restrict__ x, int64_t n_out, int64_t n_in,
            Out* __restrict__ y) {
  const int lane = threadIdx.x & 31;
  const int64_t row0 = (static_cast<int64_t>(blockIdx.x) * k_warps + (threadIdx.x >> 5)) * ROWS;
  if (row0 >= n_out) return;
  // Rows past n_out (odd tails) re-read the last row and are not stored.
  const bf16* wr[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) wr[r] = w + min(row0 + r, n_out - 1) * n_in;
  const int64_t n_chunks = n_in / 8;
  // Weights do not depend on the previous kernel: start streaming them while it finishes.
#pragma unroll
  for (int u = 0; u < k_prefetch; ++u)
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
      if (lane + 32 * u < n_chunks) prefetch_l2(wr[r] + (lane + 32 * u) * 8);
  pdl_wait();  // x is the previous kernel's output; y may still be read by it
  pdl_trigger();
  float acc[ROWS][NTOK];
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
#pragma unroll
    for (int t = 0; t < NTOK; ++t) acc[r][t] = 0.f;

  int64_t c = lane;
  for (; c + 32 * (k_unroll - 1) < n_chunks; c += 32 * k_unroll) {
    uint4 wv[k_unroll][ROWS];
#pragma unroll
    for (int u = 0; u < k_unroll; ++u)
#pragma unroll
      for (int r = 0; r < ROWS; ++r) wv[u][r] = load_stream16(wr[r] + (c + 32 * u) * 8);
#pragma unroll
    for (int u = 0; u < k_unroll; ++u) fma_chunk<NTOK, ROWS>(wv[u], x, n_in, c + 32 * u, acc);
  }
  for (; c < n_chunks; c += 32) {  // tail: fewer than k_unroll chunks left for this lane
    uint4 wv[ROWS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r) wv[r] = load_stream16(wr[r] + c * 8);
    fma_chunk<NTOK, ROWS>(wv, x, n_in, c, acc);
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
#pragma unroll
    for (int t = 0; t < NTOK; ++t) {
      const float s = warp_sum(acc[r][t]);
      if (lane == 0 && row0 + r < n_out) store_out(y + t * n_out + row0 + r, s);
    }
  }
}

template <int NTOK, int ROWS, typename Out>
void launch_one(const bf16* w, const bf16* x, int64_t n_out, int64_t n_in, Out* y, cudaStream_t stream) {
  const int64_t rows_per_block = static_cast<int64_t>(k_warps) * ROWS;
  const int64_t blocks = (n_out + rows_per_block - 1) / rows_per_block;
  DSPARK_CUDA_REQUIRE(blocks <= 0x7fffffff, "gemv_bf16: n_out too large");
  launch_kernel(gemv_kernel<NTOK, ROWS, Out>, dim3(static_cast<unsigned>(blocks)), dim3(k_warps * 32), 0, stream, w, x,
                n_out, n_in, y);
}

// NTOK tokens with `rows` (2 or 4) rows per warp.
template <int NTOK, typename Out>
void launch_rows(int rows, const bf16* w, const bf16* x, int64_t n_out, int64_t n_in, Out* y, cudaStream_t stream) {
  if (rows == 4) launch_one<NTOK, 4>(w, x, n_out, n_in, y, stream);
  else launch_one<NTOK, 2>(w, x, n_out, n_in, y, stream);
}

// rows: rows per warp for 3-8 tokens (2, or 4 for the DSPARK_GEMV_ROWS=4 variant).
template <typename Out>
void launch(const bf16* w, const bf16* x, int64_t n_tokens, int64_t n_out, int64_t n_in, Out* y,
            cudaStream_t stream, int rows) {
  check_gemv_args("gemv_bf16", w, x, n_tokens, n_out, n_in);
  switch (n_tokens) {
    case 0: return;
    case 1: launch_one<1, 1>(w, x, n_out, n_in, y, stream); return;
    case 2: launch_one<2, 1>(w, x, n_out, n_in, y, stream); return;
    case 3: launch_rows<3>(rows, w, x, n_out, n_in, y, stream); return;
    case 4: launch_rows<4>(rows, w, x, n_out, n_in, y, stream); return;
    case 5: launch_rows<5>(rows, w, x, n_out, n_in, y, stream); return;
    case 6: launch_rows<6>(rows, w, x, n_out, n_in, y, stream); return;
    case 7: launch_rows<7>(rows, w, x, n_out, n_in, y, stream); return;
    default: launch_rows<8>(rows, w, x, n_out, n_in, y, stream); return;
  }
}

}  // namespace

void check_gemv_args(const char* who, const void* w, const void* x, int64_t n_tokens, int64_t n_out, int64_t n_in) {
  // every launch passes here: the messages are built only when a check fails
  DSPARK_CUDA_REQUIRE(n_tokens >= 0 && n_tokens <= k_gemv_max_tokens,
                      std::string(who) + ": n_tokens " + std::to_string(n_tokens) + " not in 0..8");
  DSPARK_CUDA_REQUIRE(n_out > 0 && n_in > 0 && n_in % 8 == 0,
                      std::string(who) + ": n_in must be a positive multiple of 8");
  DSPARK_CUDA_REQUIRE(reinterpret_cast<uintptr_t>(w) % 16 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0,
                      std::string(who) + ": w and x must be 16-byte aligned");
}

void gemv_bf16_simt(const bf16* w, const bf16* x, int64_t n_tokens, int64_t n_out, int64_t n_in, bf16* y,
                    cudaStream_t stream) {
  launch(w, x, n_tokens, n_out, n_in, y, stream, gemv_simt_rows());
}
void gemv_bf16_simt(const bf16* w, const bf16* x, int64_t n_tokens, int64_t n_out, int64_t n_in, float* y,
                    cudaStream_t stream) {
  launch(w, x, n_tokens, n_out, n_in, y, stream, gemv_simt_rows());
}
void gemv_bf16_simt_rows4(const bf16* w, const bf16* x, int64_t n_tokens, int64_t n_out, int64_t n_in, bf16* y,
                          cudaStream_t stream) {
  launch(w, x, n_tokens, n_out, n_in, y, stream, 4);
}
void gemv_bf16_simt_rows4(const bf16* w, const bf16* x, int64_t n_tokens, int64_t n_out, int64_t n_in, float* y,
                          cudaStream_t stream) {
  launch(w, x, n_tokens, n_out, n_in, y, stream, 4);
}

int gemv_simt_rows() {
  static const int rows = [] {
    const char* v = std::getenv("DSPARK_GEMV_ROWS");
    if (v == nullptr || *v == '\0' || std::string_view(v) == "2") return 2;
    if (std::string_view(v) == "4") return 4;
    throw std::invalid_argument(std::string("DSPARK_GEMV_ROWS must be 2 or 4, not '") + v + "'");
  }();
  return rows;
}

gemv_impl gemv_kind() {
  static const gemv_impl kind = [] {
    const char* v = std::getenv("DSPARK_GEMV");
    if (v == nullptr || *v == '\0' || std::string_view(v) == "simt") return gemv_impl::simt;
    if (std::string_view(v) == "mma") return gemv_impl::mma;
    throw std::invalid_argument(std::string("DSPARK_GEMV must be simt or mma, not '") + v + "'");
  }();
  return kind;
}

const char* gemv_name(gemv_impl k) { return k == gemv_impl::mma ? "mma" : "simt"; }

void gemv_bf16(const bf16* w, const bf16* x, int64_t n_tokens, int64_t n_out, int64_t n_in, bf16* y,
               cudaStream_t stream) {
  if (gemv_kind() == gemv_impl::mma) gemv_bf16_mma(w, x, n_tokens, n_out, n_in, y, stream);
  else launch(w, x, n_tokens, n_out, n_in, y, stream, gemv_simt_rows());
}
void gemv_bf16(const bf16* w, const bf16* x, int64_t n_tokens, int64_t n_out, int64_t n_in, float* y,
               cudaStream_t stream) {
  if (gemv_kind() == gemv_impl::mma) gemv_bf16_mma(w, x, n_tokens, n_out, n_in, y, stream);
  else launch(w, x, n_tokens, n_out, n_in, y, stream, gemv_simt_rows());
}

}  // namespace dspark::cuda

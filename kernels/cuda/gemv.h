// Hand-written GEMV for decode: y = x W^T for 1..8 token rows, bf16 weights streamed once.
//
// At batch 1 a linear layer is one read of W (n_out * n_in * 2 bytes): the kernel is judged by
// how close it gets to HBM bandwidth. The bench compares it with cuBLASLt per shape.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dspark::cuda {

constexpr int k_gemv_max_tokens = 8;

// y[t, o] = sum_i x[t, i] * w[o, i] for t < n_tokens (1..k_gemv_max_tokens), o < n_out.
//   w: device [n_out, n_in] bf16; x: device [n_tokens, n_in] bf16; y: device [n_tokens, n_out]
//   bf16 or f32. n_in % 8 == 0, pointers 16-byte aligned. Accumulates in float32 per lane,
//   then a warp sum. Asynchronous on `stream`.
void gemv_bf16(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n_tokens, int64_t n_out,
               int64_t n_in, __nv_bfloat16* y, cudaStream_t stream);
void gemv_bf16(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n_tokens, int64_t n_out,
               int64_t n_in, float* y, cudaStream_t stream);

// The two implementations gemv_bf16 chooses between, callable directly by tests and benches.
// simt: CUDA-core FMAs, 1-2 rows per warp (gemv.cu). mma: tensor-core m16n8k16 tiles of 16 rows
// x 8 tokens (gemv_mma.cu). Each is batch-invariant on its own; their bits differ, so one
// process uses one of them for everything (gemv_kind()).
void gemv_bf16_simt(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n_tokens, int64_t n_out,
                    int64_t n_in, __nv_bfloat16* y, cudaStream_t stream);
void gemv_bf16_simt(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n_tokens, int64_t n_out,
                    int64_t n_in, float* y, cudaStream_t stream);
// The SIMT kernel with 4 rows per warp for 3-8 tokens (gemv_bf16_simt uses gemv_simt_rows()).
void gemv_bf16_simt_rows4(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n_tokens, int64_t n_out,
                          int64_t n_in, __nv_bfloat16* y, cudaStream_t stream);
void gemv_bf16_simt_rows4(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n_tokens, int64_t n_out,
                          int64_t n_in, float* y, cudaStream_t stream);
void gemv_bf16_mma(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n_tokens, int64_t n_out,
                   int64_t n_in, __nv_bfloat16* y, cudaStream_t stream);
void gemv_bf16_mma(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n_tokens, int64_t n_out,
                   int64_t n_in, float* y, cudaStream_t stream);

// Throws cuda_error naming `who` unless 0 <= n_tokens <= 8, n_out > 0, n_in a positive
// multiple of 8 and w, x 16-byte aligned (what both kernels need).
void check_gemv_args(const char* who, const void* w, const void* x, int64_t n_tokens, int64_t n_out, int64_t n_in);

// k-blocks (32 features of the block's 16 rows) each warp of the mma kernel pulls into L2
// before it waits for the previous kernel (programmatic dependent launch), read once from
// DSPARK_MMA_PREFETCH (0..32; default 4 = 2 KB of each row). Only the timing depends on it,
// never the bits: a knob for the A/B that picks the default (kernels/cuda/NOTES.md round 7).
// Invalid values throw std::invalid_argument naming the variable.
int gemv_mma_prefetch_kblocks();

// Rows per warp of the SIMT kernel for 3-8 tokens, read once from DSPARK_GEMV_ROWS (2, the
// default, or 4). At 8 tokens the kernel reads n_tokens activation chunks from L1 per weight
// chunk and a warp reuses each for ROWS rows, so 4 rows halve that traffic again; whether it
// pays (registers, occupancy) is the A/B's question (kernels/cuda/NOTES.md round 10). Only the
// timing depends on it, never the bits. Invalid values throw std::invalid_argument.
int gemv_simt_rows();

enum class gemv_impl { simt, mma };
// The implementation gemv_bf16 uses in this process, read once from DSPARK_GEMV (simt | mma;
// default simt). Unknown values throw std::invalid_argument naming the variable.
gemv_impl gemv_kind();
const char* gemv_name(gemv_impl k);

}  // namespace dspark::cuda

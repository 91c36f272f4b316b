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

}  // namespace dspark::cuda

// Matrix products against weight tensors in their stored type (f32, f16, bf16, q8_0, q4_0,
// q4_1, q4_k, q6_k): the CPU backend's hot path.
//
// Activations are float32. A kernel may quantize them internally (per the weight type) into
// `workspace`; the result is float32. Work is split across output rows on the pool.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/thread_pool.h"
#include "models/formats/tensor_view.h"

namespace dspark {

// Bytes of scratch that matmul needs for `n_tokens` rows of activations against `w`.
size_t matmul_workspace_size(const tensor_view& w, int64_t n_tokens);

// y[t, o] = sum_i x[t, i] * w[o, i]   for t < n_tokens, o < w.n_rows()
//   w: [n_out, n_in] weights in any supported dtype
//   x: [n_tokens, n_in] float32, row stride n_in
//   y: [n_tokens, n_out] float32, row stride n_out
//   workspace: at least matmul_workspace_size(w, n_tokens) bytes, 64-byte aligned
void matmul(const tensor_view& w, const float* x, int64_t n_tokens, float* y, void* workspace,
            thread_pool& pool);

// Reads row `row` of an embedding table of any supported dtype into dst[row_length].
void embedding_row(const tensor_view& table, int64_t row, float* dst);

}  // namespace dspark

// Small kernels the GPU drafters need beyond the target's (models/drafters/cuda/).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace dspark::cuda {

// dst[i] = bf16(src[i]) for i < n (round to nearest even). Asynchronous on `stream`.
void convert_f32_to_bf16(const float* src, int64_t n, __nv_bfloat16* dst, cudaStream_t stream);

// dst[i] += src[i] for i < n (f32). Asynchronous on `stream`.
void add_f32(float* dst, const float* src, int64_t n, cudaStream_t stream);

// The confidence head's logit per row (docs/drafter-format.md):
//   z[i] = bias + sum_j w[j] h[i, j] + sum_j w[d + j] e[i, j]
//   h: device [n_rows, d] bf16 (the final-normed draft row), e: device [n_rows, r] bf16 (the
//   Markov embedding of the previous token) or nullptr (r ignored), w: device [d + r] f32,
//   z: device [n_rows] f32. Sums in f32, one warp per row. Asynchronous on `stream`.
void confidence_logits(const __nv_bfloat16* h, int64_t d, const __nv_bfloat16* e, int64_t r, const float* w,
                       float bias, int64_t n_rows, float* z, cudaStream_t stream);

// The EAGLE-3 / MTP-1 layer input per row m (docs/drafter-format.md):
//   u[m] = [RMSNorm(embed[y[m]]; input_norm), RMSNorm(f_src[f_rows[m]]; hidden_norm)]
//   embed: device [n_vocab, d] bf16; y: device [n_rows] int32 token ids (validated by the caller);
//   f_src: device f32 rows of width d, f_rows: device [n_rows] int32 row indices into it;
//   norms: device [d] f32; u: device [n_rows, 2d] bf16. One block per row. Asynchronous.
void chain_input_rows(const __nv_bfloat16* embed, const int32_t* y, const float* f_src, const int32_t* f_rows,
                      const float* input_norm, const float* hidden_norm, float eps, int64_t n_rows, int64_t d,
                      __nv_bfloat16* u, cudaStream_t stream);

// dst[rows[i]] = src[i] for i < n_rows with rows[i] >= 0 (rows of width d, f32); rows < 0 are
// skipped (dropped entries). Asynchronous on `stream`.
void scatter_rows_f32(const float* src, const int32_t* rows, int64_t n_rows, int64_t d, float* dst,
                      cudaStream_t stream);

// A feature-reading drafter's input rows straight from the target's capture buffer:
//   dst[i, l * d + j] = src[l * layer_stride + rows[i] * d + j]   for l < n_layers, j < d
//   src: device f32 (a target's captured layers, layer_stride floats apart), rows: device
//   [n_rows] int32 row indices into each layer (valid, checked by the caller), dst: device
//   [n_rows, n_layers * d] f32. One block per row. Asynchronous on `stream`.
void gather_feature_rows(const float* src, int64_t layer_stride, int32_t n_layers, const int32_t* rows,
                         int64_t n_rows, int64_t d, float* dst, cudaStream_t stream);

}  // namespace dspark::cuda

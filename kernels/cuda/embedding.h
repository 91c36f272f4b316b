// Token embedding gather: rows of a bf16 table selected by token id.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dspark::cuda {

// out[t, :] = table[ids[t], :] for t < n_tokens.
//   table: device [n_vocab, d] bf16, row-major
//   ids:   device [n_tokens] int32
//   out:   device [n_tokens, d], f32 (the residual stream) or bf16
// An id outside [0, n_vocab) yields a row of NaN (never an out-of-bounds read): callers validate
// ids on the host; this only makes a slip visible. d must be > 0. Asynchronous on `stream`.
void embedding_gather(const __nv_bfloat16* table, int64_t n_vocab, int64_t d, const int32_t* ids,
                      int64_t n_tokens, float* out, cudaStream_t stream);
void embedding_gather(const __nv_bfloat16* table, int64_t n_vocab, int64_t d, const int32_t* ids,
                      int64_t n_tokens, __nv_bfloat16* out, cudaStream_t stream);

}  // namespace dspark::cuda

// Row selection and conversion: picks the rows whose logits were asked for (the last token
// of each sequence, or every draft position under verification) before the LM head, and
// widens bf16 rows to the float32 logits the sampler reads.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dspark::cuda {

// dst[r, :] = src[rows[r], :] for r < n_rows (rows == nullptr means rows[r] = r).
//   src: device [*, n_cols] bf16 (or f32 below), row stride src_stride; dst: device [n_rows, n_cols], row
//   stride n_cols, bf16 or f32. rows: device int32. Indices are not range-checked here: the
//   caller builds them. Asynchronous on `stream`.
void gather_rows(const __nv_bfloat16* src, int64_t src_stride, const int32_t* rows,
                 int64_t n_rows, int64_t n_cols, __nv_bfloat16* dst, cudaStream_t stream);
void gather_rows(const __nv_bfloat16* src, int64_t src_stride, const int32_t* rows,
                 int64_t n_rows, int64_t n_cols, float* dst, cudaStream_t stream);
// The same for float32 rows (captured residual-stream states).
void gather_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n_rows,
                 int64_t n_cols, float* dst, cudaStream_t stream);

}  // namespace dspark::cuda

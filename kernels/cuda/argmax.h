// Greedy token choice on the GPU: the index of each row's largest logit.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dspark::cuda {

// out[r] = argmax_j logits[r * row_stride + j] over j < n_cols; ties go to the lowest index,
// NaN entries are ignored (a row of only NaN gives 0).
//   logits: device [n_rows, row_stride] f32, n_cols <= row_stride
//   out:    device [n_rows] int32
// Asynchronous on `stream`.
void argmax_rows(const float* logits, int64_t n_rows, int64_t n_cols, int64_t row_stride,
                 int32_t* out, cudaStream_t stream);

}  // namespace dspark::cuda

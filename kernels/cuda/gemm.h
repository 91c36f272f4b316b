// Linear layers through cuBLASLt: y = x W^T with bf16 operands and float32 accumulation.
//
// Row-major shapes as everywhere in this project (a weight is [n_out, n_in], token rows are
// contiguous). The context owns the cuBLASLt handle, a preallocated workspace (so no call
// allocates, and calls can be captured in a CUDA graph) and a cache of the chosen algorithm per
// shape, filled on the first call of each shape (warm up before capturing).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace dspark::cuda {

class gemm_context {
 public:
  // Creates the handle and allocates `workspace_bytes` of device workspace (32 MiB is what
  // cuBLASLt's fastest Hopper kernels ask for at most).
  explicit gemm_context(size_t workspace_bytes = 32u << 20);
  ~gemm_context();
  gemm_context(const gemm_context&) = delete;
  gemm_context& operator=(const gemm_context&) = delete;

  // y[t, o] = sum_i x[t, i] * w[o, i]  (+ beta * y[t, o] for the float32 form)
  //   w: device [n_out, n_in] bf16;  x: device [n_tokens, n_in] bf16 (row stride n_in)
  //   y: device [n_tokens, n_out] bf16 or f32 (row stride n_out)
  // n_in % 8 == 0; any pointer alignment (plans are cached per alignment, 256 is fastest). Throws cuda_error when cuBLASLt finds no algorithm
  // or fails. Asynchronous on `stream`.
  void gemm(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n_tokens, int64_t n_out,
            int64_t n_in, __nv_bfloat16* y, cudaStream_t stream);
  void gemm(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n_tokens, int64_t n_out,
            int64_t n_in, float* y, float beta, cudaStream_t stream);

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace dspark::cuda

// RMSNorm of the float32 residual stream, fused with the residual add that precedes it.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dspark::cuda {

// For each token row t < n_tokens:
//   residual[t] += delta[t]                         (skipped when delta == nullptr)
//   out[t] = bf16(residual[t] / sqrt(mean(residual[t]^2) + eps) * weight)
//   residual: device [n_tokens, d] f32, read and written in place
//   delta:    device [n_tokens, d] bf16 or nullptr (a layer's attention or MLP output)
//   weight:   device [d] f32 (the norm gain)
//   out:      device [n_tokens, d] bf16 (the next GEMM's input); must not alias residual
// All pointers 16-byte aligned and d % 8 == 0 (every supported model has d a multiple of 64).
void rms_norm_residual(float* residual, const __nv_bfloat16* delta, const float* weight,
                       float eps, __nv_bfloat16* out, int64_t n_tokens, int64_t d,
                       cudaStream_t stream);

}  // namespace dspark::cuda

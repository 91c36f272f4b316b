// The SwiGLU activation of Llama-family MLPs: out = silu(gate) * up.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dspark::cuda {

// out[t, i] = bf16(silu(gate[t, i]) * up[t, i]), silu(g) = g / (1 + exp(-g)), in float32.
//   gate, up: device bf16, row t at gate + t * in_stride (the fused gate|up GEMM output has
//             up = gate + n_ff and in_stride = 2 * n_ff)
//   out:      device [n_tokens, n_ff] bf16, row stride n_ff
// n_ff % 8 == 0, in_stride % 8 == 0 and 16-byte aligned pointers. Asynchronous on `stream`.
void silu_mul(const __nv_bfloat16* gate, const __nv_bfloat16* up, int64_t in_stride,
              __nv_bfloat16* out, int64_t n_tokens, int64_t n_ff, cudaStream_t stream);

}  // namespace dspark::cuda

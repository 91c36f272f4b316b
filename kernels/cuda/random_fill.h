// Deterministic random fills on the GPU: benchmark weights and KV contents without host
// round trips (an 8B model's 16 GB of weights are generated in milliseconds).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dspark::cuda {

// dst[i] = lo + (hi - lo) * u(seed, i), u a counter-based hash in [0, 1). The same
// (seed, i) always gives the same value. Asynchronous on `stream`.
void fill_uniform(__nv_bfloat16* dst, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t stream);
void fill_uniform(float* dst, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t stream);

}  // namespace dspark::cuda

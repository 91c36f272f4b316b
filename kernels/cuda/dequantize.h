// Weight decoding on the GPU at load time: raw GGUF/safetensors tensor bytes -> bf16.
//
// Weights are uploaded as stored (quantized blocks or 16/32-bit floats) and decoded here into
// the bf16 tensors every other kernel reads, so the host never holds a decoded copy. The
// formulas are those of dspark::dequantize_row (models/formats/dtype.cpp), evaluated in float32
// without fused multiply-adds and rounded once to bf16 (nearest even).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "models/formats/dtype.h"

namespace dspark::cuda {

// Decodes `n` elements of type `t` (a multiple of its block size; the blocks contiguous, as a
// whole tensor or row range of one is laid out) from device memory `src` into `dst[n]`.
//   src: device, bytes_for(t, n) bytes, any alignment
//   dst: device, n bf16
// Supported: f32, f16, bf16, q4_0, q4_1, q8_0, q4_k, q6_k. Throws std::invalid_argument for a
// bad count, cuda_error for a launch failure. Asynchronous on `stream`.
void dequantize_to_bf16(dtype t, const void* src, __nv_bfloat16* dst, int64_t n,
                        cudaStream_t stream);

}  // namespace dspark::cuda

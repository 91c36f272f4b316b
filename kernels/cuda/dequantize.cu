// GPU decoding of GGUF quantized blocks and 16/32-bit floats to bf16 (see dequantize.h).
//
// One thread per output element, grid-stride: this runs once at load, so simplicity wins over
// speed (8B weights decode in well under a second anyway). Block fields are assembled from
// single bytes, since GGUF blocks (18, 20, 34, 210 bytes) are not aligned to their fields'
// sizes in general. Products are rounded one at a time (__fmul_rn, __fsub_rn, __fadd_rn) so the
// float result equals the CPU reference's before the final bf16 rounding.
#include "kernels/cuda/dequantize.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <string>

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/cuda_check.h"

namespace dspark::cuda {
namespace {

__device__ __forceinline__ uint16_t load_u16(const uint8_t* p) {
  return static_cast<uint16_t>(p[0] | (p[1] << 8));
}
__device__ __forceinline__ float load_f16(const uint8_t* p) {
  return __half2float(__ushort_as_half(load_u16(p)));
}

template <dtype T>
__device__ __forceinline__ float decode(const uint8_t* s, int64_t e) {
  if constexpr (T == dtype::f32) {
    const uint8_t* p = s + 4 * e;
    const uint32_t bits = p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<uint32_t>(p[3]) << 24);
    return __uint_as_float(bits);
  } else if constexpr (T == dtype::f16) {
    return load_f16(s + 2 * e);
  } else if constexpr (T == dtype::bf16) {
    return bf16_bits_to_float(load_u16(s + 2 * e));
  } else if constexpr (T == dtype::q4_0) {
    const uint8_t* b = s + (e / 32) * 18;  // block_q4_0: d f16, qs[16]
    const int j = static_cast<int>(e % 32);
    const uint8_t byte = b[2 + (j & 15)];
    const int q = j < 16 ? (byte & 15) : (byte >> 4);
    return __fmul_rn(load_f16(b), static_cast<float>(q - 8));
  } else if constexpr (T == dtype::q4_1) {
    const uint8_t* b = s + (e / 32) * 20;  // block_q4_1: d f16, m f16, qs[16]
    const int j = static_cast<int>(e % 32);
    const uint8_t byte = b[4 + (j & 15)];
    const int q = j < 16 ? (byte & 15) : (byte >> 4);
    return __fadd_rn(__fmul_rn(load_f16(b), static_cast<float>(q)), load_f16(b + 2));
  } else if constexpr (T == dtype::q8_0) {
    const uint8_t* b = s + (e / 32) * 34;  // block_q8_0: d f16, qs[32] int8
    const int j = static_cast<int>(e % 32);
    return __fmul_rn(load_f16(b), static_cast<float>(static_cast<int8_t>(b[2 + j])));
  } else if constexpr (T == dtype::q4_k) {
    const uint8_t* b = s + (e / 256) * 144;  // block_q4_k: d, dmin, scales[12], qs[128]
    const int j = static_cast<int>(e % 256);
    const uint8_t* sc = b + 4;
    const int sub = j / 32;
    int scale, min;
    if (sub < 4) {
      scale = sc[sub] & 0x3f;
      min = sc[sub + 4] & 0x3f;
    } else {
      scale = (sc[sub + 4] & 0x0f) | ((sc[sub - 4] >> 6) << 4);
      min = (sc[sub + 4] >> 4) | ((sc[sub] >> 6) << 4);
    }
    const uint8_t byte = b[16 + (sub / 2) * 32 + (j % 32)];
    const int q = (byte >> ((sub % 2) * 4)) & 15;
    const float d_sub = __fmul_rn(load_f16(b), static_cast<float>(scale));
    const float m_sub = __fmul_rn(load_f16(b + 2), static_cast<float>(min));
    return __fsub_rn(__fmul_rn(d_sub, static_cast<float>(q)), m_sub);
  } else {  // q6_k: ql[128], qh[64], scales[16] int8, d f16 at 208
    const uint8_t* b = s + (e / 256) * 210;
    const int j = static_cast<int>(e % 256);
    const int h = j / 128, r = j % 128, k = r / 32, l = r % 32;
    const uint8_t ql = b[64 * h + l + (k & 1) * 32];
    const uint8_t qh = b[128 + 32 * h + l];
    const int q = (((ql >> ((k >> 1) * 4)) & 15) | (((qh >> (2 * k)) & 3) << 4)) - 32;
    const float d_sub = __fmul_rn(load_f16(b + 208), static_cast<float>(static_cast<int8_t>(b[192 + j / 16])));
    return __fmul_rn(d_sub, static_cast<float>(q));
  }
}

template <dtype T>
__global__ void dequantize_kernel(const uint8_t* __restrict__ src, bf16* __restrict__ dst,
                                  int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < n; e += stride) {
    dst[e] = to_bf16(decode<T>(src, e));
  }
}

template <dtype T>
void launch(const void* src, bf16* dst, int64_t n, cudaStream_t stream) {
  constexpr int threads = 256;
  const int64_t blocks = std::min<int64_t>((n + threads - 1) / threads, 1 << 20);
  dequantize_kernel<T><<<static_cast<unsigned>(blocks), threads, 0, stream>>>(
      static_cast<const uint8_t*>(src), dst, n);
  DSPARK_CUDA_CHECK_LAUNCH();
}

}  // namespace

void dequantize_to_bf16(dtype t, const void* src, bf16* dst, int64_t n, cudaStream_t stream) {
  const dtype_traits& tr = traits(t);  // throws format_error for unknown types
  DSPARK_CUDA_REQUIRE(n >= 0 && n % tr.block_size == 0,
                      "dequantize_to_bf16: n=" + std::to_string(n) + " not a multiple of " +
                          std::to_string(tr.block_size) + " for " + std::string(tr.name));
  if (n == 0) return;
  DSPARK_CUDA_REQUIRE(src != nullptr && dst != nullptr, "dequantize_to_bf16: null pointer");
  switch (t) {
    case dtype::f32: launch<dtype::f32>(src, dst, n, stream); return;
    case dtype::f16: launch<dtype::f16>(src, dst, n, stream); return;
    case dtype::bf16: launch<dtype::bf16>(src, dst, n, stream); return;
    case dtype::q4_0: launch<dtype::q4_0>(src, dst, n, stream); return;
    case dtype::q4_1: launch<dtype::q4_1>(src, dst, n, stream); return;
    case dtype::q8_0: launch<dtype::q8_0>(src, dst, n, stream); return;
    case dtype::q4_k: launch<dtype::q4_k>(src, dst, n, stream); return;
    case dtype::q6_k: launch<dtype::q6_k>(src, dst, n, stream); return;
  }
  throw std::invalid_argument("dequantize_to_bf16: unsupported dtype");
}

}  // namespace dspark::cuda

// SiLU(gate) * up (see silu_mul.h): elementwise, 8 elements per thread per step, 16-byte I/O.
#include "kernels/cuda/silu_mul.h"

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.cuh"

namespace dspark::cuda {
namespace {

__global__ void silu_mul_kernel(const bf16* __restrict__ gate, const bf16* __restrict__ up,
                                int64_t in_stride, bf16* __restrict__ out, int64_t n_tokens,
                                int64_t n_ff) {
  pdl_wait();
  pdl_trigger();
  const int64_t groups_per_row = n_ff / 8;
  const int64_t total = n_tokens * groups_per_row;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < total; g += stride) {
    const int64_t t = g / groups_per_row;
    const int64_t i = (g % groups_per_row) * 8;
    float a[8], b[8], y[8];
    unpack8(*reinterpret_cast<const uint4*>(gate + t * in_stride + i), a);
    unpack8(*reinterpret_cast<const uint4*>(up + t * in_stride + i), b);
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = a[k] / (1.f + __expf(-a[k])) * b[k];
    *reinterpret_cast<uint4*>(out + t * n_ff + i) = pack8(y);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void silu_mul(const bf16* gate, const bf16* up, int64_t in_stride, bf16* out, int64_t n_tokens,
              int64_t n_ff, cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(n_tokens >= 0 && n_ff > 0 && n_ff % 8 == 0 && in_stride % 8 == 0 &&
                          in_stride >= n_ff,
                      "silu_mul: n_ff and in_stride must be multiples of 8, in_stride >= n_ff");
  DSPARK_CUDA_REQUIRE(aligned16(gate) && aligned16(up) && aligned16(out),
                      "silu_mul: pointers must be 16-byte aligned");
  if (n_tokens == 0) return;
  const int64_t total = n_tokens * (n_ff / 8);
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((total + threads - 1) / threads, 1 << 16);
  launch_kernel(silu_mul_kernel, dim3(static_cast<unsigned>(blocks)), dim3(threads), 0, stream, gate, up, in_stride, out,
                n_tokens, n_ff);
}

}  // namespace dspark::cuda

// Fused residual add + RMSNorm (see rms_norm.h).
//
// One block per token row. Pass 1 adds the delta into the residual (8 elements per step:
// one 16-byte bf16 load, two float4 loads/stores) and accumulates the sum of squares; pass 2
// re-reads the just-written row (an L1/L2 hit) and writes the normalized bf16 row. Memory
// traffic per row: read residual + delta, write residual + out, the floor for this fusion.
#include "kernels/cuda/rms_norm.h"

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/reduce.cuh"

namespace dspark::cuda {
namespace {

constexpr int k_threads = 256;

__global__ void __launch_bounds__(k_threads)
rms_norm_residual_kernel(float* __restrict__ residual, const bf16* __restrict__ delta,
                         const float* __restrict__ weight, float eps, bf16* __restrict__ out,
                         int64_t d) {
  __shared__ float scratch[32];
  pdl_wait();
  pdl_trigger();
  float* x = residual + blockIdx.x * d;
  const bf16* dx = delta != nullptr ? delta + blockIdx.x * d : nullptr;
  float ss = 0.f;
  for (int64_t i = threadIdx.x * 8; i < d; i += k_threads * 8) {
    float4 a = reinterpret_cast<const float4*>(x + i)[0];
    float4 b = reinterpret_cast<const float4*>(x + i)[1];
    if (dx != nullptr) {
      float f[8];
      unpack8(*reinterpret_cast<const uint4*>(dx + i), f);
      a.x += f[0]; a.y += f[1]; a.z += f[2]; a.w += f[3];
      b.x += f[4]; b.y += f[5]; b.z += f[6]; b.w += f[7];
      reinterpret_cast<float4*>(x + i)[0] = a;
      reinterpret_cast<float4*>(x + i)[1] = b;
    }
    ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w + b.x * b.x + b.y * b.y + b.z * b.z + b.w * b.w;
  }
  ss = block_sum(ss, scratch);  // its barriers also order pass 1's writes before pass 2's reads
  const float inv = rsqrtf(ss / static_cast<float>(d) + eps);
  bf16* y = out + blockIdx.x * d;
  for (int64_t i = threadIdx.x * 8; i < d; i += k_threads * 8) {
    const float4 a = reinterpret_cast<const float4*>(x + i)[0];
    const float4 b = reinterpret_cast<const float4*>(x + i)[1];
    const float4 wa = reinterpret_cast<const float4*>(weight + i)[0];
    const float4 wb = reinterpret_cast<const float4*>(weight + i)[1];
    const float f[8] = {a.x * inv * wa.x, a.y * inv * wa.y, a.z * inv * wa.z, a.w * inv * wa.w,
                        b.x * inv * wb.x, b.y * inv * wb.y, b.z * inv * wb.z, b.w * inv * wb.w};
    *reinterpret_cast<uint4*>(y + i) = pack8(f);
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void rms_norm_residual(float* residual, const bf16* delta, const float* weight, float eps,
                       bf16* out, int64_t n_tokens, int64_t d, cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(n_tokens >= 0 && n_tokens <= 0x7fffffff, "rms_norm_residual: bad n_tokens");
  DSPARK_CUDA_REQUIRE(d > 0 && d % 8 == 0, "rms_norm_residual: d must be a positive multiple of 8");
  DSPARK_CUDA_REQUIRE(aligned16(residual) && aligned16(delta) && aligned16(weight) && aligned16(out),
                      "rms_norm_residual: pointers must be 16-byte aligned");
  if (n_tokens == 0) return;
  launch_kernel(rms_norm_residual_kernel, dim3(static_cast<unsigned>(n_tokens)), dim3(k_threads), 0, stream, residual,
                delta, weight, eps, out, d);
}

}  // namespace dspark::cuda

// Fused residual add + RMSNorm (see rms_norm.h).
//
// One block per token row. Pass 1 adds the delta into the residual (8 elements per step:
// one 16-byte bf16 load, two float4 loads/stores) and accumulates the sum of squares; pass 2
// writes the normalized bf16 row (from registers for rows up to 8192 wide). Memory traffic per
// row: read residual + delta, write residual + out, the floor for this fusion.
#include "kernels/cuda/rms_norm.h"

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/reduce.cuh"

namespace dspark::cuda {
namespace {

constexpr int k_threads = 256;

// ITERS > 0: the row has at most ITERS * 8 * k_threads elements; its gain is loaded into
// registers BEFORE waiting for the previous kernel (weights are never written by a step), and
// the residual values stay in registers between the passes, so the chain after the wait is one
// global round trip, the block reduction and the stores (it was three round trips: residual +
// delta, the row again, then row + gain). ITERS == 0: any d, re-reading the row (L1/L2 hits).
// Both give the same bits: same element order, same expressions.
template <int ITERS>
__global__ void __launch_bounds__(k_threads)
rms_norm_residual_kernel(float* __restrict__ residual, const bf16* __restrict__ delta,
                         const float* __restrict__ weight, float eps, bf16* __restrict__ out,
                         int64_t d) {
  __shared__ float scratch[32];
  constexpr int N = ITERS > 0 ? ITERS : 1;
  float4 wa[N], wb[N];
  if constexpr (ITERS > 0) {
#pragma unroll
    for (int k = 0; k < ITERS; ++k) {
      const int64_t i = (threadIdx.x + static_cast<int64_t>(k) * k_threads) * 8;
      if (i < d) {
        wa[k] = reinterpret_cast<const float4*>(weight + i)[0];
        wb[k] = reinterpret_cast<const float4*>(weight + i)[1];
      }
    }
  }
  pdl_wait();
  pdl_trigger();
  float* x = residual + blockIdx.x * d;
  const bf16* dx = delta != nullptr ? delta + blockIdx.x * d : nullptr;
  float ss = 0.f;
  float4 xa[N], xb[N];
  auto add_delta = [&](float4& a, float4& b, int64_t i) {
    float f[8];
    unpack8(*reinterpret_cast<const uint4*>(dx + i), f);
    a.x += f[0]; a.y += f[1]; a.z += f[2]; a.w += f[3];
    b.x += f[4]; b.y += f[5]; b.z += f[6]; b.w += f[7];
    reinterpret_cast<float4*>(x + i)[0] = a;
    reinterpret_cast<float4*>(x + i)[1] = b;
  };
  // The rounding steps are spelled out: they are the ones the compiler chose for this kernel's
  // earlier form (y^2, then fma x, z, w, ...), so the rewrite gives the same bits as before.
  // Left to the compiler's contraction, a logically identical rewrite rounded differently and
  // moved the SmolLM2 golden test's worst top-20 logit error from 0.40 to 0.54 (bf16 noise; see
  // docs/benchmarks.md): the norm's rounding is part of what the tests pin down.
  auto sum_sq = [](const float4& a, const float4& b) {
    float s = __fmul_rn(a.y, a.y);
    s = __fmaf_rn(a.x, a.x, s);
    s = __fmaf_rn(a.z, a.z, s);
    s = __fmaf_rn(a.w, a.w, s);
    s = __fmaf_rn(b.x, b.x, s);
    s = __fmaf_rn(b.y, b.y, s);
    s = __fmaf_rn(b.z, b.z, s);
    return __fmaf_rn(b.w, b.w, s);
  };
  auto scaled = [](const float4& a, const float4& b, const float4& wa, const float4& wb, float inv) {
    const float f[8] = {__fmul_rn(__fmul_rn(a.x, inv), wa.x), __fmul_rn(__fmul_rn(a.y, inv), wa.y),
                        __fmul_rn(__fmul_rn(a.z, inv), wa.z), __fmul_rn(__fmul_rn(a.w, inv), wa.w),
                        __fmul_rn(__fmul_rn(b.x, inv), wb.x), __fmul_rn(__fmul_rn(b.y, inv), wb.y),
                        __fmul_rn(__fmul_rn(b.z, inv), wb.z), __fmul_rn(__fmul_rn(b.w, inv), wb.w)};
    return pack8(f);
  };
  if constexpr (ITERS > 0) {
#pragma unroll
    for (int k = 0; k < ITERS; ++k) {
      const int64_t i = (threadIdx.x + static_cast<int64_t>(k) * k_threads) * 8;
      if (i < d) {
        xa[k] = reinterpret_cast<const float4*>(x + i)[0];
        xb[k] = reinterpret_cast<const float4*>(x + i)[1];
        if (dx != nullptr) add_delta(xa[k], xb[k], i);
        ss = __fadd_rn(ss, sum_sq(xa[k], xb[k]));
      }
    }
  } else {
    for (int64_t i = threadIdx.x * 8; i < d; i += k_threads * 8) {
      float4 a = reinterpret_cast<const float4*>(x + i)[0];
      float4 b = reinterpret_cast<const float4*>(x + i)[1];
      if (dx != nullptr) add_delta(a, b, i);
      ss = __fadd_rn(ss, sum_sq(a, b));
    }
  }
  ss = block_sum(ss, scratch);  // its barriers also order the first pass's writes before re-reads
  const float inv = rsqrtf(__fadd_rn(__fdiv_rn(ss, static_cast<float>(d)), eps));
  bf16* y = out + blockIdx.x * d;
  if constexpr (ITERS > 0) {
#pragma unroll
    for (int k = 0; k < ITERS; ++k) {
      const int64_t i = (threadIdx.x + static_cast<int64_t>(k) * k_threads) * 8;
      if (i < d) *reinterpret_cast<uint4*>(y + i) = scaled(xa[k], xb[k], wa[k], wb[k], inv);
    }
  } else {
    for (int64_t i = threadIdx.x * 8; i < d; i += k_threads * 8) {
      const float4 a = reinterpret_cast<const float4*>(x + i)[0];
      const float4 b = reinterpret_cast<const float4*>(x + i)[1];
      const float4 ga = reinterpret_cast<const float4*>(weight + i)[0];
      const float4 gb = reinterpret_cast<const float4*>(weight + i)[1];
      *reinterpret_cast<uint4*>(y + i) = scaled(a, b, ga, gb, inv);
    }
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
  const int64_t iters = (d + 8 * k_threads - 1) / (8 * k_threads);
  const dim3 grid(static_cast<unsigned>(n_tokens)), block(k_threads);
  switch (iters) {
    case 1: launch_kernel(rms_norm_residual_kernel<1>, grid, block, 0, stream, residual, delta, weight, eps, out, d); break;
    case 2: launch_kernel(rms_norm_residual_kernel<2>, grid, block, 0, stream, residual, delta, weight, eps, out, d); break;
    case 3: launch_kernel(rms_norm_residual_kernel<3>, grid, block, 0, stream, residual, delta, weight, eps, out, d); break;
    case 4: launch_kernel(rms_norm_residual_kernel<4>, grid, block, 0, stream, residual, delta, weight, eps, out, d); break;
    default: launch_kernel(rms_norm_residual_kernel<0>, grid, block, 0, stream, residual, delta, weight, eps, out, d);
  }
}

}  // namespace dspark::cuda

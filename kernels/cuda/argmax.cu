// Row argmax (see argmax.h). One block per row; each thread scans a strided slice keeping the
// first maximum it meets, then (value, index) pairs are reduced with "larger value, or equal
// value and smaller index" so the result is the lowest index of the maximum, as on the CPU.
#include "kernels/cuda/argmax.h"

#include <cfloat>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.cuh"

namespace dspark::cuda {
namespace {

constexpr int k_threads = 512;

__device__ __forceinline__ bool better(float v, int i, float bv, int bi) {
  return v > bv || (v == bv && i < bi);
}

__global__ void __launch_bounds__(k_threads)
argmax_kernel(const float* __restrict__ logits, int64_t n_cols, int64_t row_stride,
              int32_t* __restrict__ out) {
  pdl_wait();
  pdl_trigger();
  const float* row = logits + blockIdx.x * row_stride;
  float bv = -INFINITY;
  int bi = 0x7fffffff;
  for (int64_t j = threadIdx.x; j < n_cols; j += k_threads) {
    const float v = row[j];
    if (v > bv) {  // strictly greater: the first (lowest) index of this thread's maximum stays
      bv = v;
      bi = static_cast<int>(j);
    }
  }
  // A thread that saw only NaN or -inf keeps bi = INT_MAX unless it saw -inf itself: -inf
  // rows are handled by the index rule below.
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (better(ov, oi, bv, bi)) {
      bv = ov;
      bi = oi;
    }
  }
  __shared__ float sv[k_threads / 32];
  __shared__ int si[k_threads / 32];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  if (lane == 0) {
    sv[warp] = bv;
    si[warp] = bi;
  }
  __syncthreads();
  if (warp == 0) {
    bv = lane < k_threads / 32 ? sv[lane] : -INFINITY;
    bi = lane < k_threads / 32 ? si[lane] : 0x7fffffff;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (better(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      if (bi == 0x7fffffff) {  // no finite-or-inf value > -inf: all -inf or NaN
        bi = 0;
        for (int64_t j = 0; j < n_cols; ++j) {
          if (row[j] == -INFINITY) {
            bi = static_cast<int>(j);
            break;
          }
        }
      }
      out[blockIdx.x] = bi;
    }
  }
}

}  // namespace

void argmax_rows(const float* logits, int64_t n_rows, int64_t n_cols, int64_t row_stride,
                 int32_t* out, cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(n_rows >= 0 && n_rows <= 0x7fffffff && n_cols > 0 && n_cols <= 0x7ffffffe &&
                          row_stride >= n_cols,
                      "argmax_rows: bad shape");
  if (n_rows == 0) return;
  launch_kernel(argmax_kernel, dim3(static_cast<unsigned>(n_rows)), dim3(k_threads), 0, stream, logits, n_cols,
                row_stride, out);
  DSPARK_CUDA_CHECK_LAUNCH();
}

}  // namespace dspark::cuda

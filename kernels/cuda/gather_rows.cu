// Row gather with optional bf16 -> f32 widening (see gather_rows.h). One block per output
// row, scalar elements: rows are short (d or vocab) and this runs once per step.
#include "kernels/cuda/gather_rows.h"

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.cuh"

namespace dspark::cuda {
namespace {

__device__ __forceinline__ void put(float* p, bf16 v) { *p = to_float(v); }
__device__ __forceinline__ void put(bf16* p, bf16 v) { *p = v; }
__device__ __forceinline__ void put(float* p, float v) { *p = v; }

template <typename In, typename Out>
__global__ void gather_rows_kernel(const In* __restrict__ src, int64_t src_stride,
                                   const int32_t* __restrict__ rows, int64_t n_cols,
                                   Out* __restrict__ dst) {
  pdl_wait();
  pdl_trigger();
  const int64_t r = blockIdx.x;
  const int64_t s = rows != nullptr ? rows[r] : r;
  const In* in = src + s * src_stride;
  Out* o = dst + r * n_cols;
  for (int64_t j = threadIdx.x; j < n_cols; j += blockDim.x) put(o + j, in[j]);
}

template <typename In, typename Out>
void launch(const In* src, int64_t src_stride, const int32_t* rows, int64_t n_rows,
            int64_t n_cols, Out* dst, cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(n_rows >= 0 && n_rows <= 0x7fffffff && n_cols > 0 && src_stride >= n_cols,
                      "gather_rows: bad shape");
  if (n_rows == 0) return;
  launch_kernel(gather_rows_kernel<In, Out>, dim3(static_cast<unsigned>(n_rows)), dim3(256), 0, stream, src, src_stride,
                rows, n_cols, dst);
}

}  // namespace

void gather_rows(const bf16* src, int64_t src_stride, const int32_t* rows, int64_t n_rows,
                 int64_t n_cols, bf16* dst, cudaStream_t stream) {
  launch(src, src_stride, rows, n_rows, n_cols, dst, stream);
}
void gather_rows(const bf16* src, int64_t src_stride, const int32_t* rows, int64_t n_rows,
                 int64_t n_cols, float* dst, cudaStream_t stream) {
  launch(src, src_stride, rows, n_rows, n_cols, dst, stream);
}
void gather_rows(const float* src, int64_t src_stride, const int32_t* rows, int64_t n_rows,
                 int64_t n_cols, float* dst, cudaStream_t stream) {
  launch(src, src_stride, rows, n_rows, n_cols, dst, stream);
}

}  // namespace dspark::cuda

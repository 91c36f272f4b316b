// Drafter kernels (see drafter_ops.h).
#include "kernels/cuda/drafter_ops.h"

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/reduce.cuh"

namespace dspark::cuda {
namespace {

__global__ void convert_kernel(const float* __restrict__ src, int64_t n, bf16* __restrict__ dst) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = to_bf16(src[i]);
}

__global__ void add_kernel(float* __restrict__ dst, const float* __restrict__ src, int64_t n) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] += src[i];
}

__global__ void confidence_kernel(const bf16* __restrict__ h, int64_t d, const bf16* __restrict__ e, int64_t r,
                                  const float* __restrict__ w, float bias, int64_t n_rows, float* __restrict__ z) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (row >= n_rows) return;
  float acc = 0.f;
  for (int64_t j = lane; j < d; j += 32) acc = fmaf(w[j], to_float(h[row * d + j]), acc);
  if (e != nullptr)
    for (int64_t j = lane; j < r; j += 32) acc = fmaf(w[d + j], to_float(e[row * r + j]), acc);
  acc = warp_sum(acc);
  if (lane == 0) z[row] = acc + bias;
}

// One block per row; 256 threads; d <= 256 * 16 (every drafter width we load).
template <typename T>
__device__ float block_sum_sq(const T* __restrict__ x, int64_t d, float* red) {
  float acc = 0.f;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    const float v = to_float(x[j]);
    acc = fmaf(v, v, acc);
  }
  acc = warp_sum(acc);
  if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = acc;
  __syncthreads();
  float total = 0.f;
  for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) total += red[w];
  __syncthreads();
  return total;
}

__global__ void chain_input_kernel(const bf16* __restrict__ embed, const int32_t* __restrict__ y,
                                   const float* __restrict__ f_src, const int32_t* __restrict__ f_rows,
                                   const float* __restrict__ input_norm, const float* __restrict__ hidden_norm,
                                   float eps, int64_t d, bf16* __restrict__ u) {
  __shared__ float red[32];
  const int64_t m = blockIdx.x;
  const bf16* e = embed + static_cast<int64_t>(y[m]) * d;
  const float* f = f_src + static_cast<int64_t>(f_rows[m]) * d;
  bf16* out = u + m * 2 * d;
  const float se = rsqrtf(block_sum_sq(e, d, red) / static_cast<float>(d) + eps);
  const float sf = rsqrtf(block_sum_sq(f, d, red) / static_cast<float>(d) + eps);
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
    out[j] = to_bf16(to_float(e[j]) * se * input_norm[j]);
    out[d + j] = to_bf16(f[j] * sf * hidden_norm[j]);
  }
}

__global__ void scatter_kernel(const float* __restrict__ src, const int32_t* __restrict__ rows, int64_t d,
                               float* __restrict__ dst) {
  const int32_t r = rows[blockIdx.x];
  if (r < 0) return;
  for (int64_t j = threadIdx.x; j < d; j += blockDim.x) dst[static_cast<int64_t>(r) * d + j] = src[blockIdx.x * d + j];
}

// Block i: row rows[i] of every captured layer, side by side in dst row i.
__global__ void gather_features_kernel(const float* __restrict__ src, int64_t layer_stride, int32_t n_layers,
                                       const int32_t* __restrict__ rows, int64_t d, float* __restrict__ dst) {
  const int64_t r = rows[blockIdx.x];
  const int64_t width = static_cast<int64_t>(n_layers) * d;
  float* out = dst + blockIdx.x * width;
  for (int64_t j = threadIdx.x; j < width; j += blockDim.x) {
    const int64_t l = j / d;
    out[j] = src[l * layer_stride + r * d + (j - l * d)];
  }
}

}  // namespace

void gather_feature_rows(const float* src, int64_t layer_stride, int32_t n_layers, const int32_t* rows,
                         int64_t n_rows, int64_t d, float* dst, cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(n_rows >= 0 && n_rows <= 0x7fffffff && d > 0 && n_layers > 0 && layer_stride >= 0,
                      "gather_feature_rows: bad shape");
  if (n_rows == 0) return;
  gather_features_kernel<<<static_cast<unsigned>(n_rows), 256, 0, stream>>>(src, layer_stride, n_layers, rows, d,
                                                                            dst);
  DSPARK_CUDA_CHECK(cudaGetLastError());
}

void chain_input_rows(const bf16* embed, const int32_t* y, const float* f_src, const int32_t* f_rows,
                      const float* input_norm, const float* hidden_norm, float eps, int64_t n_rows, int64_t d,
                      bf16* u, cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(n_rows >= 0 && n_rows <= 0x7fffffff && d > 0, "chain_input_rows: bad shape");
  if (n_rows == 0) return;
  chain_input_kernel<<<static_cast<unsigned>(n_rows), 256, 0, stream>>>(embed, y, f_src, f_rows, input_norm,
                                                                        hidden_norm, eps, d, u);
  DSPARK_CUDA_CHECK(cudaGetLastError());
}

void scatter_rows_f32(const float* src, const int32_t* rows, int64_t n_rows, int64_t d, float* dst,
                      cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(n_rows >= 0 && n_rows <= 0x7fffffff && d > 0, "scatter_rows_f32: bad shape");
  if (n_rows == 0) return;
  scatter_kernel<<<static_cast<unsigned>(n_rows), 256, 0, stream>>>(src, rows, d, dst);
  DSPARK_CUDA_CHECK(cudaGetLastError());
}

void convert_f32_to_bf16(const float* src, int64_t n, bf16* dst, cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(n >= 0, "convert_f32_to_bf16: negative size");
  if (n == 0) return;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 4096);
  convert_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(src, n, dst);
  DSPARK_CUDA_CHECK(cudaGetLastError());
}

void add_f32(float* dst, const float* src, int64_t n, cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(n >= 0, "add_f32: negative size");
  if (n == 0) return;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 4096);
  add_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(dst, src, n);
  DSPARK_CUDA_CHECK(cudaGetLastError());
}

void confidence_logits(const bf16* h, int64_t d, const bf16* e, int64_t r, const float* w, float bias,
                       int64_t n_rows, float* z, cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(d > 0 && n_rows >= 0 && (e == nullptr || r > 0), "confidence_logits: bad shape");
  if (n_rows == 0) return;
  const int64_t blocks = (n_rows + 7) / 8;
  confidence_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(h, d, e, r, w, bias, n_rows, z);
  DSPARK_CUDA_CHECK(cudaGetLastError());
}

}  // namespace dspark::cuda

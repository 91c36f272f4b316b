// Counter-based uniform fill (see random_fill.h): a splitmix64 finaliser of seed ^ index.
#include "kernels/cuda/random_fill.h"

#include <algorithm>

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/cuda_check.h"

namespace dspark::cuda {
namespace {

__device__ __forceinline__ float unit_hash(uint64_t seed, uint64_t i) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + i;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<float>(z >> 40) * (1.0f / 16777216.0f);  // 24 bits -> [0, 1)
}

__device__ __forceinline__ void put(float* p, float v) { *p = v; }
__device__ __forceinline__ void put(bf16* p, float v) { *p = to_bf16(v); }

template <typename T>
__global__ void fill_kernel(T* dst, int64_t n, uint64_t seed, float lo, float span) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    put(dst + i, lo + span * unit_hash(seed, static_cast<uint64_t>(i)));
}

template <typename T>
void launch(T* dst, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(n >= 0, "fill_uniform: negative count");
  if (n == 0) return;
  const int64_t blocks = std::min<int64_t>((n + 255) / 256, 1 << 16);
  fill_kernel<T><<<static_cast<unsigned>(blocks), 256, 0, stream>>>(dst, n, seed, lo, hi - lo);
  DSPARK_CUDA_CHECK_LAUNCH();
}

}  // namespace

void fill_uniform(bf16* dst, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t stream) {
  launch(dst, n, seed, lo, hi, stream);
}
void fill_uniform(float* dst, int64_t n, uint64_t seed, float lo, float hi, cudaStream_t stream) {
  launch(dst, n, seed, lo, hi, stream);
}

}  // namespace dspark::cuda

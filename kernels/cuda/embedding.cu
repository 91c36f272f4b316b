// Embedding gather (see embedding.h): one block per token, 16-byte loads when rows allow.
#include "kernels/cuda/embedding.h"

#include <cmath>

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.cuh"

namespace dspark::cuda {
namespace {

__device__ __forceinline__ void store1(float* p, float v) { *p = v; }
__device__ __forceinline__ void store1(bf16* p, float v) { *p = to_bf16(v); }

template <typename Out>
__global__ void embedding_kernel(const bf16* __restrict__ table, int64_t n_vocab, int64_t d,
                                 const int32_t* __restrict__ ids, Out* __restrict__ out) {
  pdl_wait();
  pdl_trigger();
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  Out* dst = out + t * d;
  if (id < 0 || id >= n_vocab) {
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) store1(dst + i, nanf(""));
    return;
  }
  const bf16* src = table + static_cast<int64_t>(id) * d;
  if (d % 8 == 0) {  // rows are 16-byte aligned: cudaMalloc base + row stride multiple of 16
    for (int64_t i = threadIdx.x * 8; i < d; i += blockDim.x * 8) {
      float f[8];
      unpack8(*reinterpret_cast<const uint4*>(src + i), f);
      if constexpr (sizeof(Out) == 4) {
        reinterpret_cast<float4*>(dst + i)[0] = make_float4(f[0], f[1], f[2], f[3]);
        reinterpret_cast<float4*>(dst + i)[1] = make_float4(f[4], f[5], f[6], f[7]);
      } else {
        *reinterpret_cast<uint4*>(dst + i) = pack8(f);
      }
    }
  } else {
    for (int64_t i = threadIdx.x; i < d; i += blockDim.x) store1(dst + i, to_float(src[i]));
  }
}

template <typename Out>
void launch(const bf16* table, int64_t n_vocab, int64_t d, const int32_t* ids, int64_t n_tokens,
            Out* out, cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(d > 0 && n_vocab > 0 && n_tokens >= 0, "embedding_gather: bad shape");
  DSPARK_CUDA_REQUIRE(n_tokens <= 0x7fffffff, "embedding_gather: too many tokens");
  if (n_tokens == 0) return;
  DSPARK_CUDA_REQUIRE(reinterpret_cast<uintptr_t>(table) % 16 == 0 &&
                          reinterpret_cast<uintptr_t>(out) % 16 == 0,
                      "embedding_gather: table and out must be 16-byte aligned");
  launch_kernel(embedding_kernel<Out>, dim3(static_cast<unsigned>(n_tokens)), dim3(128), 0, stream, table, n_vocab, d, ids,
                out);
  DSPARK_CUDA_CHECK_LAUNCH();
}

}  // namespace

void embedding_gather(const bf16* table, int64_t n_vocab, int64_t d, const int32_t* ids,
                      int64_t n_tokens, float* out, cudaStream_t stream) {
  launch(table, n_vocab, d, ids, n_tokens, out, stream);
}
void embedding_gather(const bf16* table, int64_t n_vocab, int64_t d, const int32_t* ids,
                      int64_t n_tokens, bf16* out, cudaStream_t stream) {
  launch(table, n_vocab, d, ids, n_tokens, out, stream);
}

}  // namespace dspark::cuda

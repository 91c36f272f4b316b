// Programmatic dependent launch (PDL), device side and the launch helper (see pdl.h).
//
// Contract for every kernel launched through launch_kernel(): call pdl_wait() before the first
// read of data a previous kernel writes and before the first write of anything a previous
// kernel may still read; after it, pdl_trigger() lets the NEXT kernel start launching (its
// blocks then run up to their own pdl_wait()). Triggering only after waiting keeps at most one
// kernel of look-ahead. Both are no-ops when the kernel was launched without the attribute.
// At least one block of every grid reaches pdl_wait(), so a grid never completes before its
// predecessor: completion stays transitive along the stream.
// Before pdl_wait() a kernel may read what no kernel of the same step writes: weights, the step
// plan the runner uploads before its first kernel (tokens, positions, slots, q/kv lengths,
// block tables, attention items) and KV-cache entries older than the step's new tokens. The
// attention, RoPE and RMSNorm kernels do, to take global round trips off the critical path; a
// caller that launches them under PDL must not produce those inputs with a kernel of the step.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.h"

namespace dspark::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Pulls one 16-byte-aligned line into L2 (no register result: fire and forget).
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

// kernel<<<grid, block, smem, stream>>>(args...), with the PDL attribute when pdl_enabled().
template <typename... KArgs, typename... Args>
void launch_kernel(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                   Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  DSPARK_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

}  // namespace dspark::cuda

// The attention prologue, fused: QKV bias, per-head q/k RMSNorm (Qwen3), RoPE at per-token
// positions, and the write of K and V into the paged cache.
//
// Reads the fused QKV projection output once and writes rotated Q plus the cache rows, so the
// new K/V never exist outside the cache. Paged cache layout (one layer):
//   k_cache, v_cache: [n_blocks, n_kv_head, block_size, head_dim] bf16
//   token slot s = block_id * block_size + offset  ->  row [s / block_size, kv_head, s % block_size]
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace dspark::cuda {

// Which dimensions RoPE rotates together (same ids as dspark::rope_style).
enum class rope_pairing : int32_t {
  interleaved = 0,  // (2i, 2i+1)
  neox = 1,         // (i, i + n_rot/2)
};

struct rope_kv_params {
  const __nv_bfloat16* qkv = nullptr;  // device [n_tokens, qkv_stride]: Q (n_head*hd) | K | V
  int64_t qkv_stride = 0;              // elements between token rows, >= (n_head+2*n_kv_head)*hd
  const float* qkv_bias = nullptr;     // device [(n_head+2*n_kv_head)*hd] f32, or nullptr
  int32_t n_tokens = 0;
  int32_t n_head = 0;
  int32_t n_kv_head = 0;
  int32_t head_dim = 0;  // even, <= 256
  int32_t n_rot = 0;     // even, <= head_dim; dims >= n_rot pass through unrotated
  const int32_t* positions = nullptr;  // device [n_tokens] absolute positions
  const float* inv_freq = nullptr;     // device [n_rot/2] f32: angle(pos, i) = pos * inv_freq[i]
  rope_pairing pairing = rope_pairing::neox;
  const float* q_norm = nullptr;  // device [head_dim] f32 gains, or nullptr (no q/k norm)
  const float* k_norm = nullptr;  // device [head_dim] f32, nullptr iff q_norm is
  float norm_eps = 1e-6f;
  __nv_bfloat16* q_out = nullptr;    // device [n_tokens, n_head, head_dim]
  __nv_bfloat16* k_cache = nullptr;  // device, layout above
  __nv_bfloat16* v_cache = nullptr;
  int32_t block_size = 0;
  int64_t n_cache_slots = 0;          // n_blocks * block_size
  const int32_t* slots = nullptr;     // device [n_tokens]; a slot < 0 or >= n_cache_slots is
                                      // not written (padding rows of a captured batch)
};

// Per token t and head h: x = qkv row part (+ bias); if q_norm: x = x / rms(x) * gain;
// rotate pairs i < n_rot/2 by angle positions[t] * inv_freq[i]; Q heads -> q_out, K heads ->
// k_cache at slots[t]; V (bias added, no norm/rotation) -> v_cache at slots[t].
// Throws std::invalid_argument on inconsistent sizes. Asynchronous on `stream`.
void rope_qk_norm_kv_write(const rope_kv_params& p, cudaStream_t stream);

}  // namespace dspark::cuda

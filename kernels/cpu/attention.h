// Causal grouped-query attention of a sequence's new tokens against its KV cache, float32.
//
// Query token t (t < n_tokens) sits at position p0 + t and attends to cache positions
// [0, p0 + t], which must already hold its own K/V. Query head h reads KV head
// h / (n_heads / n_kv_heads). Scores are scaled by `scale` (default 1 / sqrt(head_dim)) and
// normalised with a softmax that tracks the running maximum over blocks of positions, so it
// never overflows and needs no scratch.
//
// Layouts (strides in floats; 0 means "contiguous" as noted):
//   q   [n_tokens][q_stride]          head h of token t at q + t*q_stride + h*head_dim
//                                     (q_stride 0 -> n_heads*head_dim)
//   k,v [p0 + n_tokens][kv_stride]    KV head g at position p: k + p*kv_stride + g*head_dim
//                                     (kv_stride 0 -> n_kv_heads*head_dim)
//   out [n_tokens][out_stride]        same layout as q (out_stride 0 -> n_heads*head_dim);
//                                     must not overlap q, k or v
#pragma once

#include <cstdint>

#include "kernels/cpu/thread_pool.h"

namespace dspark {

struct attention_args {
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  float* out = nullptr;
  int64_t q_stride = 0;
  int64_t kv_stride = 0;
  int64_t out_stride = 0;
  int64_t n_tokens = 0;    // new query tokens
  int64_t p0 = 0;          // position of the first query token
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;  // divides n_heads
  int64_t head_dim = 0;    // <= 512
  float scale = 0.0f;      // 0 -> 1 / sqrt(head_dim)
};

// Computes out for every (token, head) pair, split across the pool; throws
// invalid_argument_error on inconsistent shapes.
void attention(const attention_args& args, thread_pool& pool);

}  // namespace dspark

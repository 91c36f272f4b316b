// Fused QKV bias + q/k RMSNorm + RoPE + paged K/V write (see rope.h).
//
// One warp per (token, head) over the n_head query heads and the n_kv_head key heads; a key
// warp also copies the matching V head. Lane l owns head-dim pairs l, l+32, l+64, l+96 (pair =
// the two dimensions RoPE rotates together), so the norm needs one warp reduction and the
// rotation needs no data exchange between lanes, whatever the pairing.
#include "kernels/cuda/rope.h"

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/reduce.cuh"

namespace dspark::cuda {
namespace {

constexpr int k_warps = 8;
constexpr int k_max_pairs_per_lane = 4;  // head_dim <= 256

// Dimensions (a, b) of pair p: rotated pairs first, then the pass-through tail in order.
__device__ __forceinline__ void pair_dims(int p, int n_rot, int pairing, int& a, int& b) {
  const int half_rot = n_rot / 2;
  if (p < half_rot) {
    if (pairing == static_cast<int>(rope_pairing::interleaved)) {
      a = 2 * p;
      b = 2 * p + 1;
    } else {
      a = p;
      b = p + half_rot;
    }
  } else {
    a = n_rot + 2 * (p - half_rot);
    b = a + 1;
  }
}

// Before waiting for the previous kernel (PDL), a warp gathers what no kernel of the step
// writes: its pair indices, the bias and norm gains (weights), the position and slot (the step
// plan, uploaded before the first kernel) and the rotation's sin/cos, the costliest part (full
// range reduction). After the wait only the QKV row's loads, the norm and the stores remain.
__global__ void __launch_bounds__(k_warps * 32) rope_kernel(const rope_kv_params p) {
  const int lane = threadIdx.x & 31;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * k_warps + (threadIdx.x >> 5);
  const int heads = p.n_head + p.n_kv_head;
  // Whole warps exit together; another warp of the grid always reaches pdl_wait().
  if (item >= static_cast<int64_t>(p.n_tokens) * heads) return;
  const int t = static_cast<int>(item / heads);
  const int h = static_cast<int>(item % heads);  // < n_head: query head; else key head
  const bool is_q = h < p.n_head;
  const int hd = p.head_dim;
  const int n_pairs = hd / 2;
  const int col0 = h * hd;  // Q heads then K heads are contiguous in the QKV row
  const int kvh = h - p.n_head;
  const int v_col0 = (p.n_head + p.n_kv_head + kvh) * hd;
  const float* gain = is_q ? p.q_norm : p.k_norm;
  const float pos = static_cast<float>(p.positions[t]);
  const int32_t slot = is_q ? -1 : p.slots[t];

  int ia[k_max_pairs_per_lane], ib[k_max_pairs_per_lane];
  float ba[k_max_pairs_per_lane], bb[k_max_pairs_per_lane];    // QKV bias (0 without)
  float vba[k_max_pairs_per_lane], vbb[k_max_pairs_per_lane];  // V bias
  float ga[k_max_pairs_per_lane], gb[k_max_pairs_per_lane];    // norm gains
  float sn[k_max_pairs_per_lane], cs[k_max_pairs_per_lane];    // rotation (pairs < n_rot / 2)
#pragma unroll
  for (int k = 0; k < k_max_pairs_per_lane; ++k) {
    const int pr = lane + 32 * k;
    ia[k] = ib[k] = 0;
    ba[k] = bb[k] = vba[k] = vbb[k] = 0.f;
    ga[k] = gb[k] = 1.f;
    sn[k] = 0.f;
    cs[k] = 1.f;
    if (pr < n_pairs) {
      pair_dims(pr, p.n_rot, static_cast<int>(p.pairing), ia[k], ib[k]);
      if (p.qkv_bias != nullptr) {
        ba[k] = p.qkv_bias[col0 + ia[k]];
        bb[k] = p.qkv_bias[col0 + ib[k]];
        if (!is_q) {
          vba[k] = p.qkv_bias[v_col0 + ia[k]];
          vbb[k] = p.qkv_bias[v_col0 + ib[k]];
        }
      }
      if (gain != nullptr) {
        ga[k] = gain[ia[k]];
        gb[k] = gain[ib[k]];
      }
      if (pr < p.n_rot / 2) sincosf(pos * p.inv_freq[pr], &sn[k], &cs[k]);  // angles reach 1e5 rad
    }
  }

  pdl_wait();
  pdl_trigger();
  const bf16* row = p.qkv + static_cast<int64_t>(t) * p.qkv_stride;
  float xa[k_max_pairs_per_lane], xb[k_max_pairs_per_lane];
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < k_max_pairs_per_lane; ++k) {
    xa[k] = xb[k] = 0.f;
    if (lane + 32 * k < n_pairs) {
      xa[k] = to_float(row[col0 + ia[k]]);
      xb[k] = to_float(row[col0 + ib[k]]);
      if (p.qkv_bias != nullptr) {
        xa[k] += ba[k];
        xb[k] += bb[k];
      }
      ss += xa[k] * xa[k] + xb[k] * xb[k];
    }
  }
  if (gain != nullptr) {
    const float inv = rsqrtf(warp_sum(ss) / static_cast<float>(hd) + p.norm_eps);
#pragma unroll
    for (int k = 0; k < k_max_pairs_per_lane; ++k) {
      if (lane + 32 * k < n_pairs) {
        xa[k] = xa[k] * inv * ga[k];
        xb[k] = xb[k] * inv * gb[k];
      }
    }
  }
#pragma unroll
  for (int k = 0; k < k_max_pairs_per_lane; ++k) {
    if (lane + 32 * k < p.n_rot / 2) {
      const float a = xa[k], b = xb[k];
      xa[k] = a * cs[k] - b * sn[k];
      xb[k] = a * sn[k] + b * cs[k];
    }
  }

  if (is_q) {
    bf16* q = p.q_out + (static_cast<int64_t>(t) * p.n_head + h) * hd;
#pragma unroll
    for (int k = 0; k < k_max_pairs_per_lane; ++k) {
      if (lane + 32 * k < n_pairs) {
        q[ia[k]] = to_bf16(xa[k]);
        q[ib[k]] = to_bf16(xb[k]);
      }
    }
    return;
  }
  if (slot < 0 || slot >= p.n_cache_slots) return;
  const int64_t blk = slot / p.block_size, off = slot % p.block_size;
  const int64_t base = ((blk * p.n_kv_head + kvh) * p.block_size + off) * hd;
#pragma unroll
  for (int k = 0; k < k_max_pairs_per_lane; ++k) {
    if (lane + 32 * k < n_pairs) {
      p.k_cache[base + ia[k]] = to_bf16(xa[k]);
      p.k_cache[base + ib[k]] = to_bf16(xb[k]);
      float va = to_float(row[v_col0 + ia[k]]), vb = to_float(row[v_col0 + ib[k]]);
      if (p.qkv_bias != nullptr) {
        va += vba[k];
        vb += vbb[k];
      }
      p.v_cache[base + ia[k]] = to_bf16(va);
      p.v_cache[base + ib[k]] = to_bf16(vb);
    }
  }
}

}  // namespace

void rope_qk_norm_kv_write(const rope_kv_params& p, cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(p.n_tokens >= 0 && p.n_head > 0 && p.n_kv_head > 0, "rope: bad head counts");
  DSPARK_CUDA_REQUIRE(p.head_dim > 0 && p.head_dim % 2 == 0 && p.head_dim <= 256,
                      "rope: head_dim must be even and <= 256");
  DSPARK_CUDA_REQUIRE(p.n_rot >= 0 && p.n_rot % 2 == 0 && p.n_rot <= p.head_dim,
                      "rope: n_rot must be even and <= head_dim");
  DSPARK_CUDA_REQUIRE(p.qkv_stride >= static_cast<int64_t>(p.n_head + 2 * p.n_kv_head) * p.head_dim,
                      "rope: qkv_stride smaller than a QKV row");
  DSPARK_CUDA_REQUIRE((p.q_norm == nullptr) == (p.k_norm == nullptr),
                      "rope: q_norm and k_norm must both be given or both be null");
  DSPARK_CUDA_REQUIRE(p.block_size > 0 && p.n_cache_slots >= 0, "rope: bad cache geometry");
  DSPARK_CUDA_REQUIRE(p.pairing == rope_pairing::interleaved || p.pairing == rope_pairing::neox,
                      "rope: unknown pairing");
  if (p.n_tokens == 0) return;
  DSPARK_CUDA_REQUIRE(p.qkv && p.positions && (p.n_rot == 0 || p.inv_freq) && p.q_out &&
                          p.k_cache && p.v_cache && p.slots,
                      "rope: null pointer");
  const int64_t items = static_cast<int64_t>(p.n_tokens) * (p.n_head + p.n_kv_head);
  const int64_t blocks = (items + k_warps - 1) / k_warps;
  DSPARK_CUDA_REQUIRE(blocks <= 0x7fffffff, "rope: too many tokens");
  launch_kernel(rope_kernel, dim3(static_cast<unsigned>(blocks)), dim3(k_warps * 32), 0, stream, p);
  DSPARK_CUDA_CHECK_LAUNCH();
}

}  // namespace dspark::cuda

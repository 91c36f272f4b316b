// Paged, ragged, causal GQA attention (see paged_attention.h for the contract).
//
// Block = (work item, kv head, key split), NW warps. The block stages its query rows (tokens x
// grouped heads, pre-scaled by scale*log2(e)) in shared memory as float, then walks the split's
// keys in tiles of T = 32 positions, double-buffered with cp.async (16-byte copies; positions
// past the split's end are zero-filled so every value in shared memory is finite):
//   scores:  lane = key within the tile; warp w owns rows w, w+NW, ... (RPW rows), so each
//            lane computes RPW dot products q_row . k_lane over head_dim;
//   softmax: per row, warp max / warp sum across the 32 lanes (= the tile's keys), online
//            rescaling of the running (m, l, acc) in base 2;
//   P.V:     lane owns head_dim/32 output dims; p for key t is broadcast with a shuffle.
// Masked keys (beyond the row's position or the split) give p = 0 exactly and leave m, l, acc
// bit-unchanged, which is what makes results independent of the batch around a row.
// K rows in shared memory are padded by 16 bytes so the lanes' 16-byte reads of 32 different
// keys hit distinct banks per quarter-warp. Variants differ only in RPW (rows per warp).
#include "kernels/cuda/paged_attention.h"

#include <climits>
#include <cmath>
#include <mutex>
#include <string>

#include "kernels/cuda/bf16.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/pdl.cuh"
#include "kernels/cuda/reduce.cuh"

namespace dspark::cuda {
namespace {

constexpr int k_tile = 32;  // keys per tile = lanes per warp
constexpr int k_warps = 4;

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int n = valid ? 16 : 0;  // 0: nothing is read, the 16 bytes are zero-filled
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(n));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

template <int HD, int RPW>
constexpr size_t smem_bytes() {
  return static_cast<size_t>(RPW * k_warps) * HD * sizeof(float) +      // q rows
         2ull * k_tile * (HD + 8) * sizeof(bf16) +                       // K, 2 buffers, padded
         2ull * k_tile * HD * sizeof(bf16);                              // V, 2 buffers
}

template <int HD, int RPW>
__global__ void __launch_bounds__(k_warps * 32)
paged_attention_kernel(const paged_attention_params p) {
  constexpr int T = k_tile, NW = k_warps, NT = NW * 32, RMAX = RPW * NW, DPL = HD / 32;
  constexpr int KS = HD + 8;  // padded K row, elements
  constexpr int C8 = HD / 8;  // 16-byte chunks per head row
  extern __shared__ __align__(16) unsigned char smem_raw[];
  float* q_s = reinterpret_cast<float*>(smem_raw);  // [RMAX][HD]
  bf16* k_s = reinterpret_cast<bf16*>(q_s + RMAX * HD);  // [2][T][KS]
  bf16* v_s = k_s + 2 * T * KS;                          // [2][T][HD]

  // Before waiting for the previous kernel (PDL): everything that no kernel of this step writes.
  // The plan (items, q/kv lengths, block tables) is uploaded before the step's first kernel,
  // and the keys before the step's new tokens were cached by earlier steps; so the block reads
  // its item and starts copying its first tile's cached keys while the RoPE kernel (which
  // writes q and the new keys) finishes. That takes ~3 dependent global round trips off the
  // layer's critical path.
  const attention_work_item it = p.items[blockIdx.x];
  // A padding item (pad_attention_items) holds no rows: nothing to read or write. Like the
  // empty splits below, it returns before the PDL wait; the grid completes with its other blocks.
  if (it.q_count <= 0) return;
  const int kvh = blockIdx.y;
  const int split = blockIdx.z;
  const int G = p.n_head / p.n_kv_head;
  const int q_start = p.cu_q_lens[it.seq];
  const int q_len = p.cu_q_lens[it.seq + 1] - q_start;
  const int old_end = p.kv_lens[it.seq] - q_len;                    // keys [0, old_end) predate the step
  const int first_pos = old_end + it.q_begin;                       // position of the item's 1st token
  const int R = it.q_count * G;                                     // live rows, <= RMAX
  const int kb = split * p.split_len;
  const int ke = min(first_pos + it.q_count, kb + p.split_len);   // keys [kb, ke)
  const int tok0 = q_start + it.q_begin;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  // A split past the item's last position holds no key for it. When the combine knows the
  // sequences (n_seqs > 0) it never reads such a split, so the block has nothing to do; graphs
  // launch max-context splits for every step and most of them end here. (Other blocks of the
  // grid wait, so the grid still completes after its predecessor.)
  if (p.n_seqs > 0 && p.n_splits > 1 && kb >= first_pos + it.q_count) return;

  const int* btab = p.block_tables + static_cast<int64_t>(it.seq) * p.max_blocks_per_seq;
  // Issues the cp.async copies of tile `tile` for the key positions in [lo, hi) (those >= ke
  // are zero-filled, so every value in shared memory stays finite); the caller commits.
  auto load_keys = [&](int tile, int buf, int lo, int hi) {
    const int t0 = kb + tile * T;
    for (int idx = threadIdx.x; idx < T * C8; idx += NT) {
      const int tt = idx / C8, c = (idx % C8) * 8;
      const int key = t0 + tt;
      if (key < lo || key >= hi) continue;
      const bool valid = key < ke;
      int64_t off = 0;
      if (valid) {
        const int64_t blk = btab[key / p.block_size];
        off = ((blk * p.n_kv_head + kvh) * p.block_size + key % p.block_size) * HD + c;
      }
      cp_async16(k_s + (buf * T + tt) * KS + c, p.k_cache + off, valid);
      cp_async16(v_s + (buf * T + tt) * HD + c, p.v_cache + off, valid);
    }
  };
  auto load_tile = [&](int tile, int buf) {
    load_keys(tile, buf, INT_MIN, INT_MAX);
    cp_async_commit();
  };
  const int n_tiles = ke > kb ? (ke - kb + T - 1) / T : 0;
  // Tile 0: the cached keys now; the step's new keys (and the zero-filled slots past ke, unless
  // they fall before old_end) after the wait.
  if (n_tiles > 0) load_keys(0, 0, INT_MIN, old_end);

  pdl_wait();
  pdl_trigger();
  if (n_tiles > 0) {
    load_keys(0, 0, old_end, INT_MAX);
    cp_async_commit();
  }

  // Stage the query rows: row j = (token j / G, head kvh*G + j % G); rows >= R are zero.
  const float qscale = p.scale * 1.4426950408889634f;
  for (int idx = threadIdx.x; idx < RMAX * C8; idx += NT) {
    const int j = idx / C8, c = (idx % C8) * 8;
    float f[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    if (j < R) {
      const bf16* src = p.q + (static_cast<int64_t>(tok0 + j / G) * p.n_head + kvh * G + j % G) * HD + c;
      unpack8(*reinterpret_cast<const uint4*>(src), f);
#pragma unroll
      for (int k = 0; k < 8; ++k) f[k] *= qscale;
    }
    reinterpret_cast<float4*>(q_s + j * HD + c)[0] = make_float4(f[0], f[1], f[2], f[3]);
    reinterpret_cast<float4*>(q_s + j * HD + c)[1] = make_float4(f[4], f[5], f[6], f[7]);
  }

  float m[RPW], l[RPW], acc[RPW][DPL];
#pragma unroll
  for (int i = 0; i < RPW; ++i) {
    m[i] = -INFINITY;
    l[i] = 0.f;
#pragma unroll
    for (int d = 0; d < DPL; ++d) acc[i][d] = 0.f;
  }

  for (int tile = 0; tile < n_tiles; ++tile) {
    const int buf = tile & 1;
    if (tile + 1 < n_tiles) {
      load_tile(tile + 1, buf ^ 1);
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();  // this tile (and, first time, the Q rows) visible to all warps
    const int t0 = kb + tile * T;
    const int n_valid = min(T, ke - t0);
    const bf16* kt = k_s + buf * T * KS;
    const bf16* vt = v_s + buf * T * HD;

    float s[RPW];
#pragma unroll
    for (int i = 0; i < RPW; ++i) s[i] = 0.f;
#pragma unroll 4
    for (int c = 0; c < HD; c += 8) {
      float kf[8];
      unpack8(*reinterpret_cast<const uint4*>(kt + lane * KS + c), kf);
#pragma unroll
      for (int i = 0; i < RPW; ++i) {
        const int j = warp + NW * i;
        if (j < R) {
          const float4 a = reinterpret_cast<const float4*>(q_s + j * HD + c)[0];
          const float4 b = reinterpret_cast<const float4*>(q_s + j * HD + c)[1];
          float t = s[i];
          t = fmaf(a.x, kf[0], t); t = fmaf(a.y, kf[1], t); t = fmaf(a.z, kf[2], t); t = fmaf(a.w, kf[3], t);
          t = fmaf(b.x, kf[4], t); t = fmaf(b.y, kf[5], t); t = fmaf(b.z, kf[6], t); t = fmaf(b.w, kf[7], t);
          s[i] = t;
        }
      }
    }

    const int key = t0 + lane;
    float pr[RPW];
#pragma unroll
    for (int i = 0; i < RPW; ++i) {
      pr[i] = 0.f;
      const int j = warp + NW * i;
      if (j < R) {  // warp-uniform
        const int pos = first_pos + j / G;
        const float sv = (lane < n_valid && key <= pos) ? s[i] : -INFINITY;
        const float m_new = fmaxf(m[i], warp_max(sv));
        float alpha = 1.f, pv = 0.f;
        if (m_new != -INFINITY) {
          alpha = exp2f(m[i] - m_new);  // m[i] = -inf -> 0; m[i] = m_new -> exactly 1
          pv = exp2f(sv - m_new);       // masked -> 0
        }
        l[i] = l[i] * alpha + warp_sum(pv);
        m[i] = m_new;
#pragma unroll
        for (int d = 0; d < DPL; ++d) acc[i][d] *= alpha;
        pr[i] = pv;
      }
    }

    for (int t = 0; t < n_valid; ++t) {
      float vf[DPL];
      if constexpr (DPL == 4) {
        const uint2 raw = *reinterpret_cast<const uint2*>(vt + t * HD + lane * 4);
        vf[0] = __uint_as_float(raw.x << 16);
        vf[1] = __uint_as_float(raw.x & 0xffff0000u);
        vf[2] = __uint_as_float(raw.y << 16);
        vf[3] = __uint_as_float(raw.y & 0xffff0000u);
      } else {
        const uint32_t raw = *reinterpret_cast<const uint32_t*>(vt + t * HD + lane * 2);
        vf[0] = __uint_as_float(raw << 16);
        vf[1] = __uint_as_float(raw & 0xffff0000u);
      }
#pragma unroll
      for (int i = 0; i < RPW; ++i) {
        const int j = warp + NW * i;
        if (j < R) {
          const float pt = __shfl_sync(0xffffffffu, pr[i], t);
#pragma unroll
          for (int d = 0; d < DPL; ++d) acc[i][d] = fmaf(pt, vf[d], acc[i][d]);
        }
      }
    }
    __syncthreads();  // everyone done with `buf` before the next iteration refills it
  }

#pragma unroll
  for (int i = 0; i < RPW; ++i) {
    const int j = warp + NW * i;
    if (j >= R) continue;
    const int64_t token = tok0 + j / G;
    const int head = kvh * G + j % G;
    if (p.n_splits == 1) {
      bf16* o = p.out + (token * p.n_head + head) * HD + lane * DPL;
#pragma unroll
      for (int d = 0; d < DPL; ++d) o[d] = to_bf16(l[i] > 0.f ? acc[i][d] / l[i] : 0.f);
    } else {
      float* ws_acc = static_cast<float*>(p.workspace);
      float* ws_ml = ws_acc + static_cast<int64_t>(p.n_splits) * p.n_tokens * p.n_head * HD;
      const int64_t idx = (static_cast<int64_t>(split) * p.n_tokens + token) * p.n_head + head;
#pragma unroll
      for (int d = 0; d < DPL; ++d) ws_acc[idx * HD + lane * DPL + d] = acc[i][d];
      if (lane == 0) {
        ws_ml[2 * idx] = m[i];
        ws_ml[2 * idx + 1] = l[i];
      }
    }
  }
}

// Merges the splits of one (token, head) per block, in split order (deterministic).
// Only the splits that start at or before the token's own position can hold unmasked keys; the
// others were written as (m = -inf, l = 0, acc = 0) and would add exact zeros (w = 0, fmaf(0, 0,
// x) = x), so they are skipped: the result is the same bits, and a graph that launches
// max-context splits for a short sequence does not pay for reading them (with split_len 128 and
// 8K contexts that is 65 splits, most of them empty). n_seqs == 0: no sequence data, read all.
__global__ void combine_kernel(const float* __restrict__ ws, bf16* __restrict__ out, int n_tokens,
                               int n_head, int hd, int n_splits, const int32_t* __restrict__ cu_q_lens,
                               const int32_t* __restrict__ kv_lens, int n_seqs, int split_len) {
  const int64_t th = blockIdx.x;  // token * n_head + head
  const int64_t per_split = static_cast<int64_t>(n_tokens) * n_head;
  const float* ws_ml = ws + static_cast<int64_t>(n_splits) * per_split * hd;
  // The step plan (cu_q_lens, kv_lens) is uploaded before the step's first kernel and no kernel
  // writes it, so the live split count is found before waiting for the attention kernel.
  int live = n_splits;
  if (n_seqs > 0) {
    const int token = static_cast<int>(th / n_head);
    int lo = 0, hi = n_seqs - 1;  // the sequence r with cu_q_lens[r] <= token < cu_q_lens[r + 1]
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (cu_q_lens[mid] <= token) lo = mid;
      else hi = mid - 1;
    }
    const int pos = kv_lens[lo] - (cu_q_lens[lo + 1] - cu_q_lens[lo]) + (token - cu_q_lens[lo]);
    live = min(n_splits, max(1, pos / split_len + 1));
  }
  pdl_wait();
  pdl_trigger();
  // The (m, l) pairs are staged in shared memory by all threads at once (the serial loops below
  // were a chain of dependent global loads: ~8 us per layer with 17 live splits); the arithmetic
  // and its order are unchanged, so the bits are too.
  constexpr int k_staged = 256;
  __shared__ float sm_m[k_staged], sm_l[k_staged];
  const bool staged = live <= k_staged;  // block-uniform
  if (staged) {
    for (int s = threadIdx.x; s < live; s += blockDim.x) {
      sm_m[s] = ws_ml[2 * (s * per_split + th)];
      sm_l[s] = ws_ml[2 * (s * per_split + th) + 1];
    }
    __syncthreads();
  }
  auto m_of = [&](int s) { return staged ? sm_m[s] : ws_ml[2 * (s * per_split + th)]; };
  auto l_of = [&](int s) { return staged ? sm_l[s] : ws_ml[2 * (s * per_split + th) + 1]; };
  float M = -INFINITY;
  for (int s = 0; s < live; ++s) M = fmaxf(M, m_of(s));
  float L = 0.f;
  for (int s = 0; s < live; ++s) {
    const float ms = m_of(s);
    const float w = ms == -INFINITY ? 0.f : exp2f(ms - M);
    L = fmaf(w, l_of(s), L);
  }
  // The splits' partial outputs are loaded k_batch at a time into registers before any is used,
  // so up to k_batch loads are in flight per thread instead of a few (the fmaf chain would
  // otherwise serialise them: 32 live splits were ~8 dependent L2 round trips); the fmaf order
  // is unchanged.
  constexpr int k_batch = 16;
  for (int d = threadIdx.x; d < hd; d += blockDim.x) {
    float o = 0.f;
    for (int s0 = 0; s0 < live; s0 += k_batch) {
      float v[k_batch];
#pragma unroll
      for (int j = 0; j < k_batch; ++j) v[j] = s0 + j < live ? ws[((s0 + j) * per_split + th) * hd + d] : 0.f;
#pragma unroll
      for (int j = 0; j < k_batch; ++j) {
        if (s0 + j < live) {
          const float ms = m_of(s0 + j);
          const float w = ms == -INFINITY ? 0.f : exp2f(ms - M);
          o = fmaf(w, v[j], o);
        }
      }
    }
    out[th * hd + d] = to_bf16(L > 0.f ? o / L : 0.f);
  }
}

template <int HD, int RPW>
void launch(const paged_attention_params& p, cudaStream_t stream) {
  constexpr size_t bytes = smem_bytes<HD, RPW>();
  static std::once_flag attr_once;  // > 48 KB of dynamic shared memory needs an opt-in
  std::call_once(attr_once, [] {
    DSPARK_CUDA_CHECK(cudaFuncSetAttribute(paged_attention_kernel<HD, RPW>,
                                           cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(bytes)));
  });
  const dim3 grid(static_cast<unsigned>(p.n_items), static_cast<unsigned>(p.n_kv_head),
                  static_cast<unsigned>(p.n_splits));
  launch_kernel(paged_attention_kernel<HD, RPW>, grid, dim3(k_warps * 32), bytes, stream, p);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

int attention_rows_per_item(attention_variant v) {
  return (v == attention_variant::decode ? 2 : 8) * k_warps;
}

int32_t plan_attention_items(const int32_t* q_lens, int32_t n_seqs, int32_t group_size, attention_variant v,
                             std::span<attention_work_item> out) {
  const int rows = attention_rows_per_item(v);
  DSPARK_CUDA_REQUIRE(group_size >= 1 && group_size <= rows,
                      "plan_attention_items: group size " + std::to_string(group_size) +
                          " exceeds the variant's " + std::to_string(rows) + " rows");
  const int per_item = rows / group_size;
  size_t n = 0;
  for (int32_t r = 0; r < n_seqs; ++r) {
    DSPARK_CUDA_REQUIRE(q_lens[r] >= 1, "plan_attention_items: q_len of sequence " +
                                            std::to_string(r) + " is " + std::to_string(q_lens[r]));
    for (int32_t b = 0; b < q_lens[r]; b += per_item) {
      DSPARK_CUDA_REQUIRE(n < out.size(), "plan_attention_items: more than " + std::to_string(out.size()) + " items");
      out[n++] = {r, b, std::min(per_item, q_lens[r] - b)};
    }
  }
  return static_cast<int32_t>(n);
}

int32_t pad_attention_items(std::span<attention_work_item> out, int32_t n, int32_t to) {
  DSPARK_CUDA_REQUIRE(n >= 0 && to >= n && static_cast<size_t>(to) <= out.size(),
                      "pad_attention_items: cannot pad " + std::to_string(n) + " items to " + std::to_string(to) +
                          " in room for " + std::to_string(out.size()));
  for (int32_t i = n; i < to; ++i) out[static_cast<size_t>(i)] = {0, 0, 0};
  return to;
}

std::vector<attention_work_item> plan_attention_items(const int32_t* q_lens, int32_t n_seqs,
                                                      int32_t group_size, attention_variant v) {
  // Every item holds at least one token, so sum(q_lens) items always suffice.
  int64_t cap = 0;
  for (int32_t r = 0; r < n_seqs; ++r) cap += std::max(q_lens[r], 0);
  std::vector<attention_work_item> items(static_cast<size_t>(cap));
  items.resize(static_cast<size_t>(plan_attention_items(q_lens, n_seqs, group_size, v, items)));
  return items;
}

size_t paged_attention_workspace_bytes(int64_t n_tokens, int32_t n_head, int32_t head_dim,
                                       int32_t n_splits) {
  if (n_splits <= 1) return 0;
  return static_cast<size_t>(n_splits) * n_tokens * n_head * (head_dim + 2) * sizeof(float);
}

void paged_attention(const paged_attention_params& p, cudaStream_t stream) {
  DSPARK_CUDA_REQUIRE(p.head_dim == 64 || p.head_dim == 128, "paged_attention: head_dim must be 64 or 128");
  DSPARK_CUDA_REQUIRE(p.n_head > 0 && p.n_kv_head > 0 && p.n_head % p.n_kv_head == 0 && p.n_kv_head <= 65535,
                      "paged_attention: n_head must be a multiple of n_kv_head");
  DSPARK_CUDA_REQUIRE(p.n_head / p.n_kv_head <= attention_rows_per_item(p.variant),
                      "paged_attention: GQA group larger than the variant's rows");
  DSPARK_CUDA_REQUIRE(p.block_size > 0 && p.max_blocks_per_seq > 0, "paged_attention: bad cache geometry");
  DSPARK_CUDA_REQUIRE(p.split_len > 0 && p.split_len % k_tile == 0, "paged_attention: split_len must be a positive multiple of 32");
  DSPARK_CUDA_REQUIRE(p.n_splits >= 1 && p.n_splits <= 65535, "paged_attention: n_splits out of range");
  DSPARK_CUDA_REQUIRE(p.n_items >= 0 && p.n_tokens >= 0, "paged_attention: negative counts");
  DSPARK_CUDA_REQUIRE(p.n_splits == 1 || p.workspace != nullptr, "paged_attention: split-K needs a workspace");
  if (p.n_items == 0 || p.n_tokens == 0) return;
  DSPARK_CUDA_REQUIRE(p.q && p.k_cache && p.v_cache && p.out && p.cu_q_lens && p.kv_lens && p.block_tables && p.items,
                      "paged_attention: null pointer");
  DSPARK_CUDA_REQUIRE(aligned16(p.q) && aligned16(p.k_cache) && aligned16(p.v_cache) && aligned16(p.out) &&
                          aligned16(p.workspace),
                      "paged_attention: tensors must be 16-byte aligned");
  const bool dec = p.variant == attention_variant::decode;
  if (p.head_dim == 128) {
    dec ? launch<128, 2>(p, stream) : launch<128, 8>(p, stream);
  } else {
    dec ? launch<64, 2>(p, stream) : launch<64, 8>(p, stream);
  }
  if (p.n_splits > 1) {
    const int64_t blocks = static_cast<int64_t>(p.n_tokens) * p.n_head;
    DSPARK_CUDA_REQUIRE(blocks <= 0x7fffffff, "paged_attention: too many rows");
    launch_kernel(combine_kernel, dim3(static_cast<unsigned>(blocks)), dim3(p.head_dim), 0, stream,
                  static_cast<const float*>(p.workspace), p.out, p.n_tokens, p.n_head, p.head_dim, p.n_splits,
                  p.cu_q_lens, p.kv_lens, p.n_seqs, p.split_len);
  }
}

}  // namespace dspark::cuda

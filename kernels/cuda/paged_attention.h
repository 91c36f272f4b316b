// Causal GQA attention over a paged bf16 KV cache for a flattened RAGGED batch: one kernel
// family for decode (q_len 1), speculative verification (q_len 1 + drafts) and prefill chunks.
//
// Batch layout (n_seqs sequences, n_tokens = sum of q_len new tokens):
//   q:        [n_tokens, n_head, head_dim] bf16; sequence r owns rows cu_q_lens[r] .. cu_q_lens[r+1)
//   kv_lens:  [n_seqs] tokens in the cache for r AFTER this step's K/V were written, so the
//             i-th new token of r sits at position kv_lens[r] - q_len_r + i and attends to keys
//             0 .. that position (its cached prefix and the new tokens up to itself).
//   k_cache, v_cache: [n_blocks, n_kv_head, block_size, head_dim] bf16 (see rope.h)
//   block_tables: [n_seqs, max_blocks_per_seq] int32: key position p of r lives in physical
//             block block_tables[r][p / block_size], offset p % block_size.
//
// Work is cut into items (sequence, first new token, token count) of at most
// rows_per_item(variant) / group_size tokens each (group_size = n_head / n_kv_head query heads
// share a K/V head and are processed together); a block handles one (item, kv head, split).
//
// Keys are partitioned into splits of `split_len` positions at fixed absolute boundaries
// (split s covers keys [s*split_len, (s+1)*split_len)). Each split keeps an online softmax;
// with more than one split the partial results go to `workspace` and a combine pass merges
// them in split order. Because tiles and splits sit at absolute key positions and masked keys
// contribute exact zeros, a token's output is bit-identical whatever else is in the batch, its
// q_len, or the variant, as long as split_len is the same: verifying l drafts in one pass
// gives the same attention output as decoding them one by one.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace dspark::cuda {

struct attention_work_item {
  int32_t seq;      // sequence index r
  int32_t q_begin;  // first new token of this item, relative to r's first new token
  int32_t q_count;  // new tokens in this item, >= 1; 0 marks a padding item (its blocks return)
};

enum class attention_variant : int32_t {
  decode = 0,   // 8 query rows per block: q_len * group_size small (decode, short verify)
  general = 1,  // 32 query rows per block: prefill chunks and long verification
};

// Query rows (token x head pairs) one block holds for a variant: 8 or 32.
int attention_rows_per_item(attention_variant v);

// Host-side plan: cuts each sequence's q_len new tokens into items that fit the variant.
// Throws std::invalid_argument if group_size exceeds the variant's rows or a q_len < 1.
std::vector<attention_work_item> plan_attention_items(const int32_t* q_lens, int32_t n_seqs,
                                                      int32_t group_size, attention_variant v);
// The same plan written into `out` without allocating (the runner's per-step path); returns the
// item count. Throws std::invalid_argument as above, or when the items do not fit in `out`.
int32_t plan_attention_items(const int32_t* q_lens, int32_t n_seqs, int32_t group_size, attention_variant v,
                             std::span<attention_work_item> out);
// Pads a plan of n items with empty ones ({0, 0, 0}) up to `to` items, so that the item count of
// a step (a CUDA graph's grid size) depends on its token count alone: ragged verification steps
// with the same tokens and sequences but different q_len mixes then share one graph. Returns
// `to`; throws std::invalid_argument if to < n or to exceeds out.size().
int32_t pad_attention_items(std::span<attention_work_item> out, int32_t n, int32_t to);

// Splits needed to cover keys [0, max_kv_len) with partitions of split_len keys.
inline int32_t attention_n_splits(int32_t max_kv_len, int32_t split_len) {
  return max_kv_len <= 0 ? 1 : (max_kv_len + split_len - 1) / split_len;
}

// Bytes of workspace for n_splits > 1 (0 when n_splits == 1).
size_t paged_attention_workspace_bytes(int64_t n_tokens, int32_t n_head, int32_t head_dim,
                                       int32_t n_splits);

struct paged_attention_params {
  const __nv_bfloat16* q = nullptr;        // device [n_tokens, n_head, head_dim]
  const __nv_bfloat16* k_cache = nullptr;  // device, layout above
  const __nv_bfloat16* v_cache = nullptr;
  __nv_bfloat16* out = nullptr;            // device [n_tokens, n_head, head_dim]
  const int32_t* cu_q_lens = nullptr;      // device [n_seqs + 1], cu_q_lens[0] = 0
  const int32_t* kv_lens = nullptr;        // device [n_seqs]
  const int32_t* block_tables = nullptr;   // device [n_seqs, max_blocks_per_seq]
  int32_t max_blocks_per_seq = 0;
  const attention_work_item* items = nullptr;  // device [n_items], from plan_attention_items
  int32_t n_items = 0;
  int32_t n_tokens = 0;
  // Sequences in cu_q_lens / kv_lens. Optional (0 = unknown): when set, the split combine reads
  // only the splits a token's position reaches (same bits, less work for short sequences).
  int32_t n_seqs = 0;
  int32_t n_head = 0;
  int32_t n_kv_head = 0;
  int32_t head_dim = 0;     // 64 or 128
  int32_t block_size = 0;   // tokens per cache block, > 0
  float scale = 0.f;        // softmax scale, usually 1/sqrt(head_dim)
  attention_variant variant = attention_variant::general;
  int32_t split_len = 0;    // keys per split, a positive multiple of 32
  int32_t n_splits = 1;     // >= attention_n_splits(max kv_len in the batch, split_len)
  void* workspace = nullptr;  // device, paged_attention_workspace_bytes(...) if n_splits > 1
};

// Runs attention for every item; see the file comment for semantics. Requirements (checked):
// head_dim in {64, 128}; n_head % n_kv_head == 0; items planned for `variant`; pointers
// 16-byte aligned. Data-dependent preconditions (kv_lens[r] >= q_len_r, block tables covering
// kv_lens[r] keys, valid block ids) are the caller's. Asynchronous on `stream`.
void paged_attention(const paged_attention_params& p, cudaStream_t stream);

}  // namespace dspark::cuda

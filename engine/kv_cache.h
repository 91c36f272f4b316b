// CPU key/value cache for many sequences, block-paged.
//
// Storage is a fixed pool of blocks allocated once at construction; each block holds
// `block_size` consecutive positions of one sequence. A sequence owns a block table mapping
// its logical positions to blocks, plus a logical length kept separately from the blocks it
// holds, so rolling back rejected draft tokens (truncate) is O(1) bookkeeping: the blocks stay
// and the next step overwrites the rolled-back slots.
//
// Layout, per layer, K and V alike (block_size = 4 in this picture):
//
//   pool   [n_blocks][block_size][n_head_kv][head_dim] f32
//          +---------+---------+---------+---------+---------+
//          | block 0 | block 1 | block 2 | block 3 | block 4 | ...
//          +---------+---------+---------+---------+---------+
//   seq 0: table [2, 0]  length 6  positions 0-3 -> block 2 slots 0-3, 4-5 -> block 0 slots 0-1
//   seq 1: table [1]     length 3  positions 0-2 -> block 1 slots 0-2
//   free list: [3, 4, ...]
//
//   position p of sequence s lives in block table[s][p / block_size], slot p % block_size;
//   within a slot, head h's vector is at [h][0 .. head_dim).
//
// Within a block the layout is the kernels' [pos][n_kv_heads][head_dim], so attention can walk
// a sequence one contiguous block at a time (block_table + k_block / v_block).
//
// A step is two-phase (prepare -> apply): reserve() makes room for the new positions of every
// sequence of a batch or fails leaving no partial state; the backend writes K/V; commit()
// advances the logical length.
//
// The bookkeeping (block tables, reference counts, automatic prefix caching: attach_prefix /
// cache_prefix) is engine/kv_block_pool.h's; this class adds the f32 storage and performs the
// copy on write a reserve() into a shared block asks for.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "engine/kv_block_pool.h"

namespace dspark {

struct kv_cache_params {
  int64_t n_layer = 0;
  int64_t n_head_kv = 0;
  int64_t head_dim = 0;
  int32_t n_seq_max = 1;   // sequences open at once
  int32_t n_ctx = 0;       // longest sequence, in positions
  int32_t block_size = 16;
  // Blocks in the pool; 0 = enough for every sequence at n_ctx (n_seq_max * ceil(n_ctx / bs)).
  int32_t n_blocks = 0;
};

class kv_cache {
 public:
  // Allocates the pool. Throws invalid_argument_error for non-positive sizes.
  explicit kv_cache(const kv_cache_params& p);

  const kv_cache_params& params() const { return p_; }
  int64_t row_size() const { return p_.n_head_kv * p_.head_dim; }  // floats per position

  // A free sequence id in [0, n_seq_max), length 0; nullopt when all are in use.
  std::optional<int32_t> open_sequence() { return pool_.open_sequence(); }
  // Returns the sequence's blocks to the pool (published ones stay cached) and its id.
  void free_sequence(int32_t seq) { pool_.free_sequence(seq); }
  bool is_open(int32_t seq) const { return pool_.is_open(seq); }

  int32_t length(int32_t seq) const { return pool_.length(seq); }  // positions holding valid K/V
  // Blocks needed to grow `seq` to n_total positions that it does not hold yet (plus one when
  // the block holding its length is shared and must be copied first).
  int32_t blocks_needed(int32_t seq, int32_t n_total) const { return pool_.blocks_needed(seq, n_total); }
  // Makes positions [length, n_total) of `seq` writable, taking blocks from the pool (and
  // copying a shared block it would write into). On failure returns the reason and changes
  // nothing.
  kv_status reserve(int32_t seq, int32_t n_total);
  // Sets the logical length after K/V of positions [length, new_len) were written; new_len
  // must be within the reserved capacity.
  void commit(int32_t seq, int32_t new_len) { pool_.commit(seq, new_len); }
  // Rolls the logical length back to new_len <= length, O(1); the blocks are kept (published
  // blocks past new_len excepted, kv_block_pool.h).
  void truncate(int32_t seq, int32_t new_len) { pool_.truncate(seq, new_len); }

  // Prefix cache (kv_block_pool.h): attach the cached blocks matching a fresh sequence's first
  // tokens (returns the positions covered), publish a sequence's full blocks.
  int32_t attach_prefix(int32_t seq, std::span<const int32_t> tokens) { return pool_.attach_prefix(seq, tokens); }
  void cache_prefix(int32_t seq, std::span<const int32_t> tokens) { pool_.cache_prefix(seq, tokens); }
  const prefix_cache_stats& prefix_stats() const { return pool_.stats(); }
  const kv_block_pool& blocks() const { return pool_; }

  // K / V vector of `pos` (within the reserved capacity): [n_head_kv][head_dim] f32.
  float* k_at(int64_t layer, int32_t seq, int32_t pos);
  float* v_at(int64_t layer, int32_t seq, int32_t pos);
  const float* k_block(int64_t layer, int32_t block) const;  // [block_size][n_head_kv][head_dim]
  const float* v_block(int64_t layer, int32_t block) const;
  const int32_t* block_table(int32_t seq) const { return pool_.block_table(seq); }  // [capacity / block_size]
  int32_t capacity(int32_t seq) const { return pool_.capacity(seq); }  // reserved positions
  // Blocks reserve() can take: free ones plus cached blocks no sequence holds (evictable).
  int32_t free_blocks() const { return pool_.free_blocks(); }

 private:
  size_t block_offset(int64_t layer, int32_t block) const;  // first float of the block in `layer`
  size_t offset(int64_t layer, int32_t seq, int32_t pos) const;

  kv_cache_params p_;
  size_t layer_stride_ = 0;            // floats per layer: n_blocks * block_size * row_size
  std::unique_ptr<float[]> k_;         // [n_layer][n_blocks][block_size][n_head_kv][head_dim]
  std::unique_ptr<float[]> v_;         // same
  kv_block_pool pool_;
};

}  // namespace dspark

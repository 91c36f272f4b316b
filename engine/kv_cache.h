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
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

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

enum class kv_status : int {
  ok = 0,
  out_of_blocks = 1,    // the pool has too few free blocks; nothing was changed
  exceeds_n_ctx = 2,    // the sequence would grow past n_ctx; nothing was changed
};

class kv_cache {
 public:
  // Allocates the pool. Throws invalid_argument_error for non-positive sizes.
  explicit kv_cache(const kv_cache_params& p);

  const kv_cache_params& params() const { return p_; }
  int64_t row_size() const { return p_.n_head_kv * p_.head_dim; }  // floats per position

  // A free sequence id in [0, n_seq_max), length 0; nullopt when all are in use.
  std::optional<int32_t> open_sequence();
  // Returns the sequence's blocks to the pool and its id to the free set.
  void free_sequence(int32_t seq);
  bool is_open(int32_t seq) const;

  int32_t length(int32_t seq) const;  // logical length (positions holding valid K/V)
  // Blocks needed to grow `seq` to n_total positions that it does not hold yet.
  int32_t blocks_needed(int32_t seq, int32_t n_total) const;
  // Makes positions [0, n_total) of `seq` addressable, taking blocks from the pool. On failure
  // returns the reason and changes nothing.
  kv_status reserve(int32_t seq, int32_t n_total);
  // Sets the logical length after K/V of positions [length, new_len) were written; new_len
  // must be within the reserved capacity.
  void commit(int32_t seq, int32_t new_len);
  // Rolls the logical length back to new_len <= length, O(1); the blocks are kept.
  void truncate(int32_t seq, int32_t new_len);

  // K / V vector of `pos` (within the reserved capacity): [n_head_kv][head_dim] f32.
  float* k_at(int64_t layer, int32_t seq, int32_t pos);
  float* v_at(int64_t layer, int32_t seq, int32_t pos);
  const float* k_block(int64_t layer, int32_t block) const;  // [block_size][n_head_kv][head_dim]
  const float* v_block(int64_t layer, int32_t block) const;
  const int32_t* block_table(int32_t seq) const;  // [capacity / block_size] block ids
  int32_t capacity(int32_t seq) const;            // reserved positions
  int32_t free_blocks() const { return static_cast<int32_t>(free_blocks_.size()); }

 private:
  struct sequence {
    bool open = false;
    int32_t length = 0;
    std::vector<int32_t> blocks;  // capacity reserved for n_ctx / block_size at construction
  };
  void check_seq(int32_t seq) const;
  size_t offset(int64_t layer, int32_t seq, int32_t pos) const;

  kv_cache_params p_;
  size_t layer_stride_ = 0;            // floats per layer: n_blocks * block_size * row_size
  std::unique_ptr<float[]> k_;         // [n_layer][n_blocks][block_size][n_head_kv][head_dim]
  std::unique_ptr<float[]> v_;         // same
  std::vector<int32_t> free_blocks_;   // stack of free block ids
  std::vector<sequence> seqs_;         // [n_seq_max]
};

}  // namespace dspark

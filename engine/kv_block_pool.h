// Paged-KV bookkeeping on the host, shared by the CPU cache (engine/kv_cache.h) and the CUDA
// backend: block ids, per-sequence block tables and logical lengths, and automatic prefix
// caching (block-level prefix sharing). It stores no K/V itself: the owner of the storage
// writes the positions and performs the block copies reserve() asks for.
//
// Blocks and sequences. A sequence's block table maps its positions to blocks (position p in
// table[p / block_size], slot p % block_size). Its logical length is kept apart from the blocks
// it holds, so truncate() is O(1) and the next step overwrites the rolled-back slots.
//
// Prefix cache. A FULL block whose K/V hold known tokens can be published (cache_prefix): it
// gets a key, the hash chain (parent block's key, the block's block_size token ids), and joins
// a hash table. A new sequence whose first tokens match a chain of published blocks attaches
// them (attach_prefix) instead of recomputing them: its table starts with the same block ids,
// each block's reference count goes up, and its length starts at the attached count.
//
//   seq A: prompt [sys sys sys sys | sys sys sys sys | sys a a a]     block_size 4
//           table  [      7        |       3         |    5     ]    7, 3 published
//   seq B: prompt [sys sys sys sys | sys sys sys sys | sys b b]
//           table  [      7        |       3         |    9     ]    attach_prefix -> 8
//   block 7, 3: refs 2 (shared); B prefills only positions 8-10.
//
// Keys are collision-safe: a lookup compares the parent's key and all block_size token ids
// stored with the block, so a 64-bit hash collision only costs a longer bucket walk. A parent
// key is a serial number never reused, so a child of an evicted block cannot be reached again.
//
// Lifetimes. A block is free (no data of interest), held (refs >= 1) or cached-evictable
// (published, refs 0). free_sequence() releases a sequence's blocks in reverse order: private
// ones go to the free list, published ones to the back of an LRU list. Allocation takes from
// the free list first and evicts from the LRU front (least recently released; a sequence's tail
// before its head) only when the free list is empty. free_blocks() counts both kinds: evictable
// blocks are free for admission.
//
// Immutability. A published block never changes while published: only the sequence that
// computed it could write it, and only after a truncate() below its end. Then
//   - whole published blocks past the new length leave the table at once (truncate), and
//   - the published block holding the new length is copied on write: the next reserve() gives
//     the sequence a private block and returns the copy (src -> dst, whole block) for the
//     storage owner to perform before writing; blocks_needed() counts it.
// attach_prefix() never attaches the block holding the last given token (the caller must
// forward at least one token to get logits), so an attached sequence starts writing in a block
// of its own. A decoding loop that never truncates below its committed length (spec_decoder)
// never triggers a copy.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace dspark {

enum class kv_status : int {
  ok = 0,
  out_of_blocks = 1,    // the pool has too few free blocks; nothing was changed
  exceeds_n_ctx = 2,    // the sequence would grow past n_ctx; nothing was changed
};

// Prefix-cache counters and gauges (exported as the server's dspark_prefix_cache_* metrics).
struct prefix_cache_stats {
  int64_t queries = 0;        // attach_prefix calls
  int64_t hits = 0;           // ... that attached at least one block
  int64_t query_tokens = 0;   // tokens offered to attach_prefix
  int64_t hit_tokens = 0;     // tokens attached (not recomputed)
  int64_t evictions = 0;      // published blocks reclaimed for new data
  int32_t cached_blocks = 0;  // published blocks (held or evictable)
  int32_t evictable_blocks = 0;  // published blocks no sequence holds (counted as free)
  // References beyond the first to blocks held by several sequences: sum over held blocks of
  // refs - 1. The blocks the open sequences' tables would take without sharing, minus the
  // blocks they do take.
  int32_t shared_refs = 0;
};

// One whole-block copy reserve() asks the storage owner to do before writing (copy on write).
struct kv_block_copy {
  int32_t src = -1;  // published block being left
  int32_t dst = -1;  // the sequence's new private block
};

struct kv_block_pool_params {
  int32_t n_seq_max = 1;   // sequences open at once
  int32_t n_ctx = 0;       // longest sequence, in positions
  int32_t block_size = 16;
  int32_t n_blocks = 0;    // > 0
};

class kv_block_pool {
 public:
  // Throws invalid_argument_error for non-positive sizes.
  explicit kv_block_pool(const kv_block_pool_params& p);

  const kv_block_pool_params& params() const { return p_; }

  // A free sequence id in [0, n_seq_max), length 0; nullopt when all are in use.
  std::optional<int32_t> open_sequence();
  // Releases the sequence's blocks (published ones stay cached, evictable) and its id.
  void free_sequence(int32_t seq);
  bool is_open(int32_t seq) const;

  int32_t length(int32_t seq) const;    // logical length
  int32_t capacity(int32_t seq) const;  // positions its table covers
  const int32_t* block_table(int32_t seq) const;  // [capacity / block_size] block ids
  // Blocks reserve(seq, n_total) takes from the pool (new blocks + a copy-on-write block).
  int32_t blocks_needed(int32_t seq, int32_t n_total) const;
  // Makes positions [length, n_total) writable: appends blocks and, when the block holding
  // `length` is published, swaps in a private copy and writes the copy to *cow (else cow->src
  // = -1). On failure returns the reason and changes nothing.
  kv_status reserve(int32_t seq, int32_t n_total, kv_block_copy* cow);
  // Sets the logical length after positions [length, new_len) were written, new_len <= capacity.
  void commit(int32_t seq, int32_t new_len);
  // Rolls the logical length back to new_len <= length; O(1) unless published blocks lie past
  // new_len (they leave the table).
  void truncate(int32_t seq, int32_t new_len);

  // Free plus evictable blocks: what reserve() can take.
  int32_t free_blocks() const { return static_cast<int32_t>(free_.size()) + stats_.evictable_blocks; }

  // Prefix cache (see above). `seq` must be open with length 0 and no blocks. Attaches the
  // longest chain of published blocks matching tokens[0 ..), leaving out the block that holds
  // tokens.back(); sets the length to the tokens covered and returns it (a multiple of
  // block_size, 0 on a miss).
  int32_t attach_prefix(int32_t seq, std::span<const int32_t> tokens);
  // Publishes the full blocks among seq's first min(length, tokens.size()) positions, whose
  // K/V hold `tokens` (the sequence's own tokens from position 0). Blocks already published by
  // earlier calls are skipped; a block whose key is already cached (another sequence computed
  // the same tokens) stays private. No allocation.
  void cache_prefix(int32_t seq, std::span<const int32_t> tokens);
  const prefix_cache_stats& stats() const { return stats_; }
  int32_t refs(int32_t block) const { return blocks_[static_cast<size_t>(block)].refs; }
  bool is_published(int32_t block) const { return blocks_[static_cast<size_t>(block)].key != 0; }

 private:
  struct block_info {
    int32_t refs = 0;
    uint64_t key = 0;         // serial key while published, 0 otherwise
    uint64_t parent = 0;      // parent block's key (0: first block of a sequence)
    uint64_t hash = 0;        // of (parent, tokens)
    int32_t next_in_bucket = -1;
    int32_t lru_prev = -1, lru_next = -1;  // evictable list links
  };
  struct sequence {
    bool open = false;
    int32_t length = 0;
    std::vector<int32_t> blocks;   // block table; capacity for n_ctx reserved at construction
    std::vector<uint64_t> chain;   // [n_keyed] key of each leading block (cache_prefix / attach)
  };
  void check_seq(int32_t seq, const char* who) const;
  uint64_t hash_of(uint64_t parent, const int32_t* tokens) const;
  int32_t find(uint64_t hash, uint64_t parent, const int32_t* tokens) const;
  void publish(int32_t block, uint64_t hash, uint64_t parent, const int32_t* tokens);
  void unpublish(int32_t block);
  int32_t take_block();
  void hold(int32_t block);
  void release(int32_t block);
  void lru_push_back(int32_t block);
  void lru_remove(int32_t block);
  bool needs_copy(const sequence& s) const;

  kv_block_pool_params p_;
  std::vector<block_info> blocks_;     // [n_blocks]
  std::vector<int32_t> tokens_;        // [n_blocks][block_size] token ids of published blocks
  std::vector<int32_t> buckets_;       // [n_buckets] first block of each hash bucket, -1 empty
  std::vector<int32_t> free_;          // stack of free block ids
  int32_t lru_head_ = -1, lru_tail_ = -1;
  uint64_t next_key_ = 1;
  std::vector<sequence> seqs_;         // [n_seq_max]
  prefix_cache_stats stats_;
};

}  // namespace dspark

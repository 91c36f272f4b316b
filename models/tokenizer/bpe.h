// Byte-pair merging of one pre-tokenized piece, on token ids.
//
// A piece starts as one symbol per byte (the token spelling that byte); then the adjacent pair
// with the lowest merge rank is merged, leftmost first among equal ranks, until no adjacent
// pair has a merge. This is the result Hugging Face's BPE model gives: merging strings or ids
// is the same once every merge's parts and result are known tokens (the loaders check that).
//
// Cost: O(n log n) in the piece's byte length n, through a min-heap of candidate pairs over a
// linked list of symbols, so long runs (a 10k-space line, base64) stay cheap.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

namespace dspark {

class bpe_merges {
 public:
  bpe_merges() { byte_token_.fill(-1); }

  // The token for the single byte `b` (-1: none; such bytes are dropped, as HF does without an
  // unknown token; they only occur in invalid UTF-8).
  void set_byte_token(uint8_t b, int32_t id) { byte_token_[b] = id; }
  int32_t byte_token(uint8_t b) const { return byte_token_[b]; }

  // Prepares the table for `n` merges (an optimisation; add() grows it as needed).
  void reserve(size_t n);
  // Appends a merge with the next rank. Returns false if the pair already has a merge (the
  // first, best-ranked one is kept). Ids must be >= 0.
  bool add(int32_t left, int32_t right, int32_t result);
  size_t size() const { return size_; }

  // Merges `bytes` (non-empty) and appends the resulting ids to `out`.
  void encode(std::string_view bytes, std::vector<int32_t>& out) const;

 private:
  // Open-addressing hash table (linear probing, load <= 1/2): the merge lookup is the inner
  // loop of encoding, and a flat table avoids a cache miss per node of a chained map.
  struct slot {
    uint64_t key;  // k_empty when free
    int32_t rank;
    int32_t result;
  };
  static constexpr uint64_t k_empty = ~uint64_t(0);  // ids are >= 0, so no pair has this key
  static uint64_t key(int32_t l, int32_t r) { return (uint64_t(uint32_t(l)) << 32) | uint32_t(r); }
  size_t home(uint64_t k) const { return size_t((k * 0x9E3779B97F4A7C15ull) >> shift_); }
  const slot* find(int32_t l, int32_t r) const {
    if (slots_.empty()) return nullptr;
    const uint64_t k = key(l, r);
    for (size_t i = home(k);; i = (i + 1) & (slots_.size() - 1)) {
      if (slots_[i].key == k) return &slots_[i];
      if (slots_[i].key == k_empty) return nullptr;
    }
  }
  void rehash(size_t capacity);

  std::array<int32_t, 256> byte_token_;
  std::vector<slot> slots_;  // power-of-two size
  unsigned shift_ = 64;      // 64 - log2(slots_.size())
  size_t size_ = 0;
};

}  // namespace dspark

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
#include <unordered_map>
#include <vector>

namespace dspark {

class bpe_merges {
 public:
  bpe_merges() { byte_token_.fill(-1); }

  // The token for the single byte `b` (-1: none; such bytes are dropped, as HF does without an
  // unknown token; they only occur in invalid UTF-8).
  void set_byte_token(uint8_t b, int32_t id) { byte_token_[b] = id; }
  int32_t byte_token(uint8_t b) const { return byte_token_[b]; }

  // Appends a merge with the next rank. Returns false if the pair already has a merge (the
  // first, best-ranked one is kept).
  bool add(int32_t left, int32_t right, int32_t result);
  size_t size() const { return merges_.size(); }

  // Merges `bytes` (non-empty) and appends the resulting ids to `out`.
  void encode(std::string_view bytes, std::vector<int32_t>& out) const;

 private:
  struct merge {
    int32_t rank;
    int32_t result;
  };
  static uint64_t key(int32_t l, int32_t r) { return (uint64_t(uint32_t(l)) << 32) | uint32_t(r); }
  const merge* find(int32_t l, int32_t r) const {
    auto it = merges_.find(key(l, r));
    return it == merges_.end() ? nullptr : &it->second;
  }

  std::array<int32_t, 256> byte_token_;
  std::unordered_map<uint64_t, merge> merges_;
};

}  // namespace dspark

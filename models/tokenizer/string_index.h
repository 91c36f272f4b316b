// A flat hash index from strings to their position in a vector<string> the caller owns.
//
// Why not unordered_map<string, int>: loading a 49k-token vocabulary does ~150k lookups (three
// per merge) and a chained map costs several cache misses each (bucket, node, key). Here a
// lookup touches one 16-byte slot, holding the full 64-bit hash, and compares the key only on
// a hash match. The index stores ids, not pointers, so the owner stays freely movable; every
// call passes the same `keys` vector the ids refer to.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace dspark {

class string_index {
 public:
  // Prepares for `n` keys (an optimisation).
  void reserve(size_t n);
  // Indexes keys[id]; returns false (keeping the existing id) when an equal key is indexed.
  bool insert(int32_t id, const std::vector<std::string>& keys);
  // The id whose key equals `key`, or -1.
  int32_t find(std::string_view key, const std::vector<std::string>& keys) const;
  size_t size() const { return size_; }

 private:
  struct slot {
    uint64_t hash;
    int32_t id;  // -1 when free
  };
  static uint64_t hash_of(std::string_view s);
  void rehash(size_t capacity);
  size_t find_slot(std::string_view key, uint64_t h, const std::vector<std::string>& keys) const;

  std::vector<slot> slots_;  // power-of-two size, load <= 1/2
  size_t size_ = 0;
};

}  // namespace dspark

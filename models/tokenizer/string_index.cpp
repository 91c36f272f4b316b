// Linear-probing string index (see string_index.h).
#include "models/tokenizer/string_index.h"

#include <functional>

namespace dspark {

uint64_t string_index::hash_of(std::string_view s) {
  // std::hash is a strong 64-bit hash (murmur-style in libstdc++); mix once more so the low
  // bits used for the slot are well spread.
  const uint64_t h = std::hash<std::string_view>{}(s);
  return h ^ (h >> 29) ^ (h * 0x9E3779B97F4A7C15ull);
}

void string_index::rehash(size_t capacity) {
  std::vector<slot> old;
  old.swap(slots_);
  slots_.assign(capacity, slot{0, -1});
  for (const slot& s : old) {
    if (s.id < 0) continue;
    size_t i = size_t(s.hash) & (capacity - 1);
    while (slots_[i].id >= 0) i = (i + 1) & (capacity - 1);
    slots_[i] = s;
  }
}

void string_index::reserve(size_t n) {
  size_t capacity = 16;
  while (capacity < 2 * n) capacity *= 2;
  if (capacity > slots_.size()) rehash(capacity);
}

size_t string_index::find_slot(std::string_view key, uint64_t h, const std::vector<std::string>& keys) const {
  const size_t mask = slots_.size() - 1;
  for (size_t i = size_t(h) & mask;; i = (i + 1) & mask) {
    const slot& s = slots_[i];
    if (s.id < 0 || (s.hash == h && keys[size_t(s.id)] == key)) return i;
  }
}

bool string_index::insert(int32_t id, const std::vector<std::string>& keys) {
  reserve(size_ + 1);
  const std::string& key = keys[size_t(id)];
  const uint64_t h = hash_of(key);
  const size_t i = find_slot(key, h, keys);
  if (slots_[i].id >= 0) return false;
  slots_[i] = slot{h, id};
  ++size_;
  return true;
}

int32_t string_index::find(std::string_view key, const std::vector<std::string>& keys) const {
  if (slots_.empty()) return -1;
  return slots_[find_slot(key, hash_of(key), keys)].id;
}

}  // namespace dspark

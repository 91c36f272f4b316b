// Heap-driven BPE merging (see bpe.h).
#include "models/tokenizer/bpe.h"

#include <algorithm>

namespace dspark {
namespace {

struct symbol {
  int32_t id;
  int32_t prev;  // index of the previous live symbol, -1 at the start
  int32_t next;  // index of the next live symbol, -1 at the end
  bool alive;
};

// A possible merge of symbols[left] with symbols[right], valid while both still hold the ids
// recorded here and are still neighbours (entries go stale as merges happen around them).
struct candidate {
  int32_t rank;
  int32_t left;
  int32_t right;
  int32_t left_id;
  int32_t right_id;
  int32_t result;
};

// Min-heap order: lowest rank first, then the leftmost pair.
struct candidate_after {
  bool operator()(const candidate& a, const candidate& b) const {
    return a.rank != b.rank ? a.rank > b.rank : a.left > b.left;
  }
};

}  // namespace

void bpe_merges::rehash(size_t capacity) {
  std::vector<slot> old;
  old.swap(slots_);
  slots_.assign(capacity, slot{k_empty, 0, 0});
  shift_ = 64;
  for (size_t c = capacity; c > 1; c >>= 1) --shift_;
  for (const slot& s : old) {
    if (s.key == k_empty) continue;
    size_t i = home(s.key);
    while (slots_[i].key != k_empty) i = (i + 1) & (capacity - 1);
    slots_[i] = s;
  }
}

void bpe_merges::reserve(size_t n) {
  size_t capacity = 16;
  while (capacity < 2 * n) capacity *= 2;
  if (capacity > slots_.size()) rehash(capacity);
}

bool bpe_merges::add(int32_t left, int32_t right, int32_t result) {
  if (find(left, right)) return false;
  reserve(size_ + 1);
  const uint64_t k = key(left, right);
  size_t i = home(k);
  while (slots_[i].key != k_empty) i = (i + 1) & (slots_.size() - 1);
  slots_[i] = slot{k, int32_t(size_), result};
  ++size_;
  return true;
}

void bpe_merges::encode(std::string_view bytes, std::vector<int32_t>& out) const {
  thread_local std::vector<symbol> syms;
  thread_local std::vector<candidate> heap;
  syms.clear();
  heap.clear();
  for (char c : bytes) {
    const int32_t id = byte_token_[static_cast<uint8_t>(c)];
    if (id < 0) continue;
    const auto i = int32_t(syms.size());
    syms.push_back({id, i - 1, -1, true});
    if (i > 0) syms[i - 1].next = i;
  }
  if (syms.empty()) return;

  auto push_pair = [&](int32_t l) {
    if (l < 0) return;
    const int32_t r = syms[l].next;
    if (r < 0) return;
    if (const slot* m = find(syms[l].id, syms[r].id)) {
      heap.push_back({m->rank, l, r, syms[l].id, syms[r].id, m->result});
      std::push_heap(heap.begin(), heap.end(), candidate_after{});
    }
  };
  for (int32_t i = 0; i + 1 < int32_t(syms.size()); ++i) push_pair(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), candidate_after{});
    const candidate c = heap.back();
    heap.pop_back();
    symbol& l = syms[c.left];
    if (!l.alive || l.next != c.right || l.id != c.left_id || syms[c.right].id != c.right_id) continue;
    symbol& r = syms[c.right];
    l.id = c.result;
    r.alive = false;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    push_pair(l.prev);
    push_pair(c.left);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) out.push_back(syms[i].id);
}

}  // namespace dspark

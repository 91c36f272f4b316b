// kv_block_pool: block tables, lengths, reference counts, the prefix cache's hash table and
// its LRU of evictable blocks (see kv_block_pool.h).
#include "engine/kv_block_pool.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "common/error.h"

namespace dspark {

namespace {

int32_t ceil_div(int64_t a, int64_t b) { return static_cast<int32_t>((a + b - 1) / b); }

uint64_t mix64(uint64_t x) {  // splitmix64's finalizer
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

kv_block_pool::kv_block_pool(const kv_block_pool_params& p) : p_(p) {
  auto positive = [](int64_t v, const char* name) {
    if (v <= 0)
      throw invalid_argument_error(std::string("kv_block_pool: ") + name + " must be > 0, got " +
                                   std::to_string(v));
  };
  positive(p.n_seq_max, "n_seq_max");
  positive(p.n_ctx, "n_ctx");
  positive(p.block_size, "block_size");
  positive(p.n_blocks, "n_blocks");
  blocks_.resize(static_cast<size_t>(p.n_blocks));
  tokens_.resize(static_cast<size_t>(p.n_blocks) * p.block_size);
  size_t n_buckets = 16;
  while (n_buckets < 2 * static_cast<size_t>(p.n_blocks)) n_buckets *= 2;
  buckets_.assign(n_buckets, -1);
  free_.reserve(static_cast<size_t>(p.n_blocks));
  for (int32_t b = p.n_blocks - 1; b >= 0; --b) free_.push_back(b);  // pops give 0, 1, 2, ...
  seqs_.resize(static_cast<size_t>(p.n_seq_max));
  const int32_t per_seq = ceil_div(p.n_ctx, p.block_size);
  for (auto& s : seqs_) {
    s.blocks.reserve(static_cast<size_t>(per_seq));
    s.chain.reserve(static_cast<size_t>(per_seq));
  }
}

void kv_block_pool::check_seq(int32_t seq, const char* who) const {
  if (seq < 0 || seq >= p_.n_seq_max || !seqs_[static_cast<size_t>(seq)].open)
    throw invalid_argument_error(std::string(who) + ": sequence " + std::to_string(seq) +
                                 " is not open (valid ids: open sequences in [0, " +
                                 std::to_string(p_.n_seq_max) + "))");
}

std::optional<int32_t> kv_block_pool::open_sequence() {
  for (int32_t s = 0; s < p_.n_seq_max; ++s) {
    sequence& q = seqs_[static_cast<size_t>(s)];
    if (!q.open) {
      q.open = true;
      q.length = 0;
      return s;
    }
  }
  return std::nullopt;
}

void kv_block_pool::free_sequence(int32_t seq) {
  check_seq(seq, "kv_block_pool::free_sequence");
  sequence& s = seqs_[static_cast<size_t>(seq)];
  // Tail first: an evictable tail is reclaimed before the head other prompts may share.
  for (auto it = s.blocks.rbegin(); it != s.blocks.rend(); ++it) release(*it);
  s.blocks.clear();
  s.chain.clear();
  s.length = 0;
  s.open = false;
}

bool kv_block_pool::is_open(int32_t seq) const {
  return seq >= 0 && seq < p_.n_seq_max && seqs_[static_cast<size_t>(seq)].open;
}

int32_t kv_block_pool::length(int32_t seq) const {
  check_seq(seq, "kv_block_pool::length");
  return seqs_[static_cast<size_t>(seq)].length;
}

int32_t kv_block_pool::capacity(int32_t seq) const {
  check_seq(seq, "kv_block_pool::capacity");
  return static_cast<int32_t>(seqs_[static_cast<size_t>(seq)].blocks.size()) * p_.block_size;
}

const int32_t* kv_block_pool::block_table(int32_t seq) const {
  check_seq(seq, "kv_block_pool::block_table");
  return seqs_[static_cast<size_t>(seq)].blocks.data();
}

// The block holding `length` is published (shared with another sequence): writing it needs a
// private copy. Only a truncate() into a shared block leads here.
bool kv_block_pool::needs_copy(const sequence& s) const {
  const size_t i = static_cast<size_t>(s.length / p_.block_size);
  return s.length % p_.block_size != 0 && i < s.blocks.size() && is_published(s.blocks[i]);
}

int32_t kv_block_pool::blocks_needed(int32_t seq, int32_t n_total) const {
  check_seq(seq, "kv_block_pool::blocks_needed");
  const sequence& s = seqs_[static_cast<size_t>(seq)];
  const int32_t have = static_cast<int32_t>(s.blocks.size());
  const int32_t want = ceil_div(n_total, p_.block_size);
  const int32_t copy = n_total > s.length && needs_copy(s) ? 1 : 0;
  return (want > have ? want - have : 0) + copy;
}

kv_status kv_block_pool::reserve(int32_t seq, int32_t n_total, kv_block_copy* cow) {
  check_seq(seq, "kv_block_pool::reserve");
  if (cow) *cow = kv_block_copy{};
  if (n_total > p_.n_ctx) return kv_status::exceeds_n_ctx;
  const int32_t need = blocks_needed(seq, n_total);
  if (need > free_blocks()) return kv_status::out_of_blocks;
  sequence& s = seqs_[static_cast<size_t>(seq)];
  if (n_total > s.length && needs_copy(s)) {
    if (cow == nullptr) throw invalid_argument_error("kv_block_pool::reserve: a copy on write needs a copy slot");
    int32_t& slot = s.blocks[static_cast<size_t>(s.length / p_.block_size)];
    const int32_t fresh = take_block();
    *cow = kv_block_copy{slot, fresh};
    release(slot);
    slot = fresh;
  }
  while (static_cast<int64_t>(s.blocks.size()) * p_.block_size < n_total)
    s.blocks.push_back(take_block());  // within reserved capacity: no allocation
  return kv_status::ok;
}

void kv_block_pool::commit(int32_t seq, int32_t new_len) {
  check_seq(seq, "kv_block_pool::commit");
  if (new_len < 0 || new_len > capacity(seq))
    throw invalid_argument_error("kv_block_pool::commit: length " + std::to_string(new_len) +
                                 " outside the reserved capacity [0, " +
                                 std::to_string(capacity(seq)) + "]");
  seqs_[static_cast<size_t>(seq)].length = new_len;
}

void kv_block_pool::truncate(int32_t seq, int32_t new_len) {
  check_seq(seq, "kv_block_pool::truncate");
  sequence& s = seqs_[static_cast<size_t>(seq)];
  if (new_len < 0 || new_len > s.length)
    throw invalid_argument_error("kv_block_pool::truncate: new length " + std::to_string(new_len) +
                                 " outside [0, " + std::to_string(s.length) + "]");
  s.length = new_len;
  const size_t bs = static_cast<size_t>(p_.block_size);
  const size_t keyed = std::min(s.chain.size(), static_cast<size_t>(new_len) / bs);
  s.chain.resize(keyed);  // shrinking: no allocation
  // Published blocks wholly past the new length leave the table (with everything after them),
  // so the next step never writes into them. Usually none: this scan is over the rolled-back
  // tail only.
  size_t cut = s.blocks.size();
  for (size_t i = (static_cast<size_t>(new_len) + bs - 1) / bs; i < s.blocks.size(); ++i)
    if (is_published(s.blocks[i])) {
      cut = i;
      break;
    }
  while (s.blocks.size() > cut) {
    release(s.blocks.back());
    s.blocks.pop_back();
  }
  // The block holding the new length: a published block only this sequence holds becomes
  // private again (written in place); a shared one is copied by the next reserve().
  const size_t i = static_cast<size_t>(new_len) / bs;
  if (new_len % p_.block_size != 0 && i < s.blocks.size() && is_published(s.blocks[i]) &&
      blocks_[static_cast<size_t>(s.blocks[i])].refs == 1)
    unpublish(s.blocks[i]);
}

uint64_t kv_block_pool::hash_of(uint64_t parent, const int32_t* tokens) const {
  uint64_t h = mix64(parent + 0x9e3779b97f4a7c15ull);
  for (int32_t i = 0; i < p_.block_size; ++i) h = mix64(h ^ static_cast<uint32_t>(tokens[i]));
  return h;
}

// The published block with this parent key and these tokens, or -1.
int32_t kv_block_pool::find(uint64_t hash, uint64_t parent, const int32_t* tokens) const {
  const size_t bs = static_cast<size_t>(p_.block_size);
  for (int32_t b = buckets_[hash & (buckets_.size() - 1)]; b >= 0; b = blocks_[static_cast<size_t>(b)].next_in_bucket) {
    const block_info& bi = blocks_[static_cast<size_t>(b)];
    if (bi.hash == hash && bi.parent == parent &&
        std::memcmp(tokens_.data() + static_cast<size_t>(b) * bs, tokens, bs * sizeof(int32_t)) == 0)
      return b;
  }
  return -1;
}

void kv_block_pool::publish(int32_t block, uint64_t hash, uint64_t parent, const int32_t* tokens) {
  block_info& bi = blocks_[static_cast<size_t>(block)];
  const size_t bs = static_cast<size_t>(p_.block_size);
  std::memcpy(tokens_.data() + static_cast<size_t>(block) * bs, tokens, bs * sizeof(int32_t));
  bi.key = next_key_++;
  bi.parent = parent;
  bi.hash = hash;
  int32_t& head = buckets_[hash & (buckets_.size() - 1)];
  bi.next_in_bucket = head;
  head = block;
  ++stats_.cached_blocks;
}

void kv_block_pool::unpublish(int32_t block) {
  block_info& bi = blocks_[static_cast<size_t>(block)];
  int32_t* link = &buckets_[bi.hash & (buckets_.size() - 1)];
  while (*link != block) link = &blocks_[static_cast<size_t>(*link)].next_in_bucket;
  *link = bi.next_in_bucket;
  bi.next_in_bucket = -1;
  bi.key = 0;
  --stats_.cached_blocks;
}

// A block for new data, refs 1: a free one, else the least recently released cached one.
int32_t kv_block_pool::take_block() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else {
    b = lru_head_;  // callers checked free_blocks() first
    lru_remove(b);
    --stats_.evictable_blocks;
    unpublish(b);
    ++stats_.evictions;
  }
  blocks_[static_cast<size_t>(b)].refs = 1;
  return b;
}

void kv_block_pool::hold(int32_t block) {
  block_info& bi = blocks_[static_cast<size_t>(block)];
  if (bi.refs == 0) {  // only published blocks are found, so it sits in the LRU
    lru_remove(block);
    --stats_.evictable_blocks;
  } else {
    ++stats_.shared_refs;
  }
  ++bi.refs;
}

void kv_block_pool::release(int32_t block) {
  block_info& bi = blocks_[static_cast<size_t>(block)];
  if (--bi.refs > 0) {
    --stats_.shared_refs;
    return;
  }
  if (bi.key != 0) {
    lru_push_back(block);
    ++stats_.evictable_blocks;
  } else {
    free_.push_back(block);
  }
}

void kv_block_pool::lru_push_back(int32_t block) {
  block_info& bi = blocks_[static_cast<size_t>(block)];
  bi.lru_prev = lru_tail_;
  bi.lru_next = -1;
  if (lru_tail_ >= 0) blocks_[static_cast<size_t>(lru_tail_)].lru_next = block;
  else lru_head_ = block;
  lru_tail_ = block;
}

void kv_block_pool::lru_remove(int32_t block) {
  block_info& bi = blocks_[static_cast<size_t>(block)];
  if (bi.lru_prev >= 0) blocks_[static_cast<size_t>(bi.lru_prev)].lru_next = bi.lru_next;
  else lru_head_ = bi.lru_next;
  if (bi.lru_next >= 0) blocks_[static_cast<size_t>(bi.lru_next)].lru_prev = bi.lru_prev;
  else lru_tail_ = bi.lru_prev;
  bi.lru_prev = bi.lru_next = -1;
}

int32_t kv_block_pool::attach_prefix(int32_t seq, std::span<const int32_t> tokens) {
  check_seq(seq, "kv_block_pool::attach_prefix");
  sequence& s = seqs_[static_cast<size_t>(seq)];
  if (s.length != 0 || !s.blocks.empty())
    throw invalid_argument_error("kv_block_pool::attach_prefix: sequence " + std::to_string(seq) +
                                 " already holds positions; attach only to a fresh sequence");
  ++stats_.queries;
  stats_.query_tokens += static_cast<int64_t>(tokens.size());
  if (tokens.empty()) return 0;
  const size_t bs = static_cast<size_t>(p_.block_size);
  // Never the block holding the last token: the caller forwards it for its logits.
  const size_t max_blocks = std::min((tokens.size() - 1) / bs, static_cast<size_t>(p_.n_ctx) / bs);
  uint64_t parent = 0;
  for (size_t k = 0; k < max_blocks; ++k) {
    const int32_t* t = tokens.data() + k * bs;
    const int32_t b = find(hash_of(parent, t), parent, t);
    if (b < 0) break;
    hold(b);
    s.blocks.push_back(b);
    parent = blocks_[static_cast<size_t>(b)].key;
    s.chain.push_back(parent);
  }
  s.length = static_cast<int32_t>(s.blocks.size() * bs);
  if (s.length > 0) {
    ++stats_.hits;
    stats_.hit_tokens += s.length;
  }
  return s.length;
}

void kv_block_pool::cache_prefix(int32_t seq, std::span<const int32_t> tokens) {
  check_seq(seq, "kv_block_pool::cache_prefix");
  sequence& s = seqs_[static_cast<size_t>(seq)];
  const size_t bs = static_cast<size_t>(p_.block_size);
  const size_t n_full = std::min(static_cast<size_t>(s.length), tokens.size()) / bs;
  for (size_t k = s.chain.size(); k < n_full; ++k) {
    const int32_t* t = tokens.data() + k * bs;
    const uint64_t parent = k > 0 ? s.chain[k - 1] : 0;
    const uint64_t h = hash_of(parent, t);
    const int32_t b = s.blocks[k];
    if (is_published(b)) break;  // cannot happen past the chain (see truncate); stay safe
    const int32_t same = find(h, parent, t);
    if (same >= 0) {
      s.chain.push_back(blocks_[static_cast<size_t>(same)].key);  // a duplicate stays private
    } else {
      publish(b, h, parent, t);
      s.chain.push_back(blocks_[static_cast<size_t>(b)].key);
    }
  }
}

}  // namespace dspark

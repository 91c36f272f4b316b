// Block-paged CPU KV cache: pool, block tables, logical lengths.
#include "engine/kv_cache.h"

#include <string>

#include "common/error.h"

namespace dspark {

namespace {

int32_t ceil_div(int64_t a, int64_t b) { return static_cast<int32_t>((a + b - 1) / b); }

}  // namespace

kv_cache::kv_cache(const kv_cache_params& p) : p_(p) {
  auto positive = [](int64_t v, const char* name) {
    if (v <= 0)
      throw invalid_argument_error(std::string("kv_cache: ") + name + " must be > 0, got " +
                                   std::to_string(v));
  };
  positive(p.n_layer, "n_layer");
  positive(p.n_head_kv, "n_head_kv");
  positive(p.head_dim, "head_dim");
  positive(p.n_seq_max, "n_seq_max");
  positive(p.n_ctx, "n_ctx");
  positive(p.block_size, "block_size");
  if (p_.n_blocks <= 0) p_.n_blocks = p.n_seq_max * ceil_div(p.n_ctx, p.block_size);

  layer_stride_ = static_cast<size_t>(p_.n_blocks) * p_.block_size * row_size();
  // Left uninitialised: pages are only touched (committed) as blocks get used.
  k_.reset(new float[layer_stride_ * p_.n_layer]);
  v_.reset(new float[layer_stride_ * p_.n_layer]);

  free_blocks_.reserve(p_.n_blocks);
  for (int32_t b = p_.n_blocks - 1; b >= 0; --b) free_blocks_.push_back(b);
  seqs_.resize(p_.n_seq_max);
  for (auto& s : seqs_) s.blocks.reserve(ceil_div(p_.n_ctx, p_.block_size));
}

void kv_cache::check_seq(int32_t seq) const {
  if (seq < 0 || seq >= p_.n_seq_max || !seqs_[seq].open)
    throw invalid_argument_error("kv_cache: sequence " + std::to_string(seq) +
                                 " is not open (valid ids: open sequences in [0, " +
                                 std::to_string(p_.n_seq_max) + "))");
}

std::optional<int32_t> kv_cache::open_sequence() {
  for (int32_t s = 0; s < p_.n_seq_max; ++s) {
    if (!seqs_[s].open) {
      seqs_[s].open = true;
      seqs_[s].length = 0;
      return s;
    }
  }
  return std::nullopt;
}

void kv_cache::free_sequence(int32_t seq) {
  check_seq(seq);
  sequence& s = seqs_[seq];
  for (auto it = s.blocks.rbegin(); it != s.blocks.rend(); ++it) free_blocks_.push_back(*it);
  s.blocks.clear();
  s.length = 0;
  s.open = false;
}

bool kv_cache::is_open(int32_t seq) const {
  return seq >= 0 && seq < p_.n_seq_max && seqs_[seq].open;
}

int32_t kv_cache::length(int32_t seq) const {
  check_seq(seq);
  return seqs_[seq].length;
}

int32_t kv_cache::capacity(int32_t seq) const {
  check_seq(seq);
  return static_cast<int32_t>(seqs_[seq].blocks.size()) * p_.block_size;
}

int32_t kv_cache::blocks_needed(int32_t seq, int32_t n_total) const {
  check_seq(seq);
  const int32_t have = static_cast<int32_t>(seqs_[seq].blocks.size());
  const int32_t want = ceil_div(n_total, p_.block_size);
  return want > have ? want - have : 0;
}

kv_status kv_cache::reserve(int32_t seq, int32_t n_total) {
  check_seq(seq);
  if (n_total > p_.n_ctx) return kv_status::exceeds_n_ctx;
  const int32_t need = blocks_needed(seq, n_total);
  if (need > free_blocks()) return kv_status::out_of_blocks;
  sequence& s = seqs_[seq];
  for (int32_t i = 0; i < need; ++i) {
    s.blocks.push_back(free_blocks_.back());  // within reserved capacity: no allocation
    free_blocks_.pop_back();
  }
  return kv_status::ok;
}

void kv_cache::commit(int32_t seq, int32_t new_len) {
  check_seq(seq);
  if (new_len < 0 || new_len > capacity(seq))
    throw invalid_argument_error("kv_cache::commit: length " + std::to_string(new_len) +
                                 " outside the reserved capacity [0, " +
                                 std::to_string(capacity(seq)) + "]");
  seqs_[seq].length = new_len;
}

void kv_cache::truncate(int32_t seq, int32_t new_len) {
  check_seq(seq);
  if (new_len < 0 || new_len > seqs_[seq].length)
    throw invalid_argument_error("kv_cache::truncate: new length " + std::to_string(new_len) +
                                 " outside [0, " + std::to_string(seqs_[seq].length) + "]");
  seqs_[seq].length = new_len;
}

size_t kv_cache::offset(int64_t layer, int32_t seq, int32_t pos) const {
  const int32_t block = seqs_[seq].blocks[pos / p_.block_size];
  const int32_t slot = pos % p_.block_size;
  return static_cast<size_t>(layer) * layer_stride_ +
         (static_cast<size_t>(block) * p_.block_size + slot) * row_size();
}

float* kv_cache::k_at(int64_t layer, int32_t seq, int32_t pos) {
  return k_.get() + offset(layer, seq, pos);
}

float* kv_cache::v_at(int64_t layer, int32_t seq, int32_t pos) {
  return v_.get() + offset(layer, seq, pos);
}

const float* kv_cache::k_block(int64_t layer, int32_t block) const {
  return k_.get() + static_cast<size_t>(layer) * layer_stride_ +
         static_cast<size_t>(block) * p_.block_size * row_size();
}

const float* kv_cache::v_block(int64_t layer, int32_t block) const {
  return v_.get() + static_cast<size_t>(layer) * layer_stride_ +
         static_cast<size_t>(block) * p_.block_size * row_size();
}

const int32_t* kv_cache::block_table(int32_t seq) const {
  check_seq(seq);
  return seqs_[seq].blocks.data();
}

}  // namespace dspark

// Block-paged CPU KV cache: the f32 pool over kv_block_pool's bookkeeping.
#include "engine/kv_cache.h"

#include <algorithm>
#include <string>
#include <utility>

#include "common/error.h"

namespace dspark {

namespace {

int32_t ceil_div(int64_t a, int64_t b) { return static_cast<int32_t>((a + b - 1) / b); }

// n_blocks filled in; the storage sizes checked (kv_block_pool checks the rest).
kv_cache_params checked(kv_cache_params p) {
  for (const auto& [v, name] : {std::pair<int64_t, const char*>{p.n_layer, "n_layer"}, {p.n_head_kv, "n_head_kv"},
                                {p.head_dim, "head_dim"}, {p.block_size, "block_size"}})
    if (v <= 0)
      throw invalid_argument_error(std::string("kv_cache: ") + name + " must be > 0, got " + std::to_string(v));
  if (p.n_blocks <= 0 && p.n_seq_max > 0 && p.n_ctx > 0) p.n_blocks = p.n_seq_max * ceil_div(p.n_ctx, p.block_size);
  return p;
}

}  // namespace

kv_cache::kv_cache(const kv_cache_params& p)
    : p_(checked(p)), pool_(kv_block_pool_params{p_.n_seq_max, p_.n_ctx, p_.block_size, p_.n_blocks}) {
  layer_stride_ = static_cast<size_t>(p_.n_blocks) * p_.block_size * row_size();
  // Left uninitialised: pages are only touched (committed) as blocks get used.
  k_.reset(new float[layer_stride_ * p_.n_layer]);
  v_.reset(new float[layer_stride_ * p_.n_layer]);
}

kv_status kv_cache::reserve(int32_t seq, int32_t n_total) {
  kv_block_copy cow;
  const kv_status st = pool_.reserve(seq, n_total, &cow);
  if (st == kv_status::ok && cow.src >= 0) {
    const size_t n = static_cast<size_t>(p_.block_size) * row_size();
    for (int64_t l = 0; l < p_.n_layer; ++l) {
      std::copy_n(k_.get() + block_offset(l, cow.src), n, k_.get() + block_offset(l, cow.dst));
      std::copy_n(v_.get() + block_offset(l, cow.src), n, v_.get() + block_offset(l, cow.dst));
    }
  }
  return st;
}

size_t kv_cache::block_offset(int64_t layer, int32_t block) const {
  return static_cast<size_t>(layer) * layer_stride_ + static_cast<size_t>(block) * p_.block_size * row_size();
}

size_t kv_cache::offset(int64_t layer, int32_t seq, int32_t pos) const {
  const int32_t block = pool_.block_table(seq)[pos / p_.block_size];
  return block_offset(layer, block) + static_cast<size_t>(pos % p_.block_size) * row_size();
}

float* kv_cache::k_at(int64_t layer, int32_t seq, int32_t pos) {
  return k_.get() + offset(layer, seq, pos);
}

float* kv_cache::v_at(int64_t layer, int32_t seq, int32_t pos) {
  return v_.get() + offset(layer, seq, pos);
}

const float* kv_cache::k_block(int64_t layer, int32_t block) const { return k_.get() + block_offset(layer, block); }

const float* kv_cache::v_block(int64_t layer, int32_t block) const { return v_.get() + block_offset(layer, block); }

}  // namespace dspark

// kv_manager: see kv_manager.h.
#include "actors/kv_manager.h"

#include <algorithm>
#include <string>

#include "common/error.h"

namespace dspark::actors {

kv_manager::kv_manager(const kv_manager_params& p) : p_(p) {
  if (p.total_blocks <= 0 || p.block_size <= 0 || p.n_ctx <= 0 || p.lookahead < 0)
    throw invalid_argument_error("kv_manager: total_blocks, block_size and n_ctx must be > 0 (got " +
                                 std::to_string(p.total_blocks) + ", " + std::to_string(p.block_size) +
                                 ", " + std::to_string(p.n_ctx) + ")");
}

int32_t kv_blocks_for(const kv_manager_params& p, int32_t prompt_len, int32_t max_tokens) {
  const int64_t want = std::min<int64_t>(p.n_ctx, int64_t{prompt_len} + max_tokens + p.lookahead);
  return static_cast<int32_t>((want + p.block_size - 1) / p.block_size);
}

int32_t kv_manager::blocks_for(int32_t prompt_len, int32_t max_tokens) const {
  return kv_blocks_for(p_, prompt_len, max_tokens);
}

bool kv_manager::could_fit(int32_t prompt_len, int32_t max_tokens) const {
  return blocks_for(prompt_len, max_tokens) <= p_.total_blocks;
}

bool kv_manager::try_admit(uint64_t key, int32_t prompt_len, int32_t max_tokens) {
  if (held_.count(key)) throw invalid_argument_error("kv_manager: request " + std::to_string(key) + " admitted twice");
  const int32_t n = blocks_for(prompt_len, max_tokens);
  if (n > free_blocks()) return false;
  held_.emplace(key, n);
  used_ += n;
  return true;
}

int32_t kv_manager::reserve_prefix(std::span<const kv_ask> asks) {
  int32_t n = 0;
  for (const kv_ask& a : asks) {
    if (!try_admit(a.id, a.prompt_len, a.max_tokens)) break;
    ++n;
  }
  return n;
}

void kv_manager::set_shared_credit(int32_t blocks) {
  if (blocks < 0) throw invalid_argument_error("kv_manager: the shared credit must be >= 0, got " + std::to_string(blocks));
  shared_ = blocks;
}

void kv_manager::release(uint64_t key) {
  const auto it = held_.find(key);
  if (it == held_.end()) return;
  used_ -= it->second;
  held_.erase(it);
  if (held_.empty()) shared_ = 0;
}

}  // namespace dspark::actors

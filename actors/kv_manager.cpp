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

int32_t kv_manager::blocks_for(int32_t prompt_len, int32_t max_tokens) const {
  const int64_t want = std::min<int64_t>(p_.n_ctx, int64_t{prompt_len} + max_tokens + p_.lookahead);
  return static_cast<int32_t>((want + p_.block_size - 1) / p_.block_size);
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

void kv_manager::set_shared_credit(int32_t blocks) {
  if (blocks < 0) throw invalid_argument_error("kv_manager: the shared credit must be >= 0, got " + std::to_string(blocks));
  shared_ = blocks;
}

void kv_manager::release(uint64_t key) {
  const auto it = held_.find(key);
  if (it == held_.end()) return;
  used_ -= it->second;
  held_.erase(it);
}

}  // namespace dspark::actors

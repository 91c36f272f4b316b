// ngram_drafter: prompt lookup over the request's own context.
#include "models/drafters/ngram_drafter.h"

#include <algorithm>
#include <string>

#include "common/error.h"

namespace dspark {

ngram_drafter::ngram_drafter(const ngram_drafter_params& p) : p_(p) {
  if (p.min_n < 1 || p.min_n > 64)
    throw invalid_argument_error("ngram_drafter: min_n " + std::to_string(p.min_n) + " out of range [1, 64]");
  if (p.max_n < p.min_n || p.max_n > 64)
    throw invalid_argument_error("ngram_drafter: max_n " + std::to_string(p.max_n) + " out of range [min_n = " +
                                 std::to_string(p.min_n) + ", 64]");
  if (p.max_slots < 1)
    throw invalid_argument_error("ngram_drafter: max_slots " + std::to_string(p.max_slots) + " must be >= 1");
  caps_.name = "ngram";
  caps_.dist_kind = draft_dist_kind::one_hot;
  open_.assign(static_cast<size_t>(p.max_slots), 0);
  scratch_.assign(256, 0);
}

void ngram_drafter::check_open(int32_t slot) const {
  if (slot < 0 || slot >= p_.max_slots)
    throw invalid_argument_error("ngram_drafter: slot " + std::to_string(slot) + " out of range [0, " +
                                 std::to_string(p_.max_slots) + ")");
  if (!open_[static_cast<size_t>(slot)])
    throw invalid_argument_error("ngram_drafter: slot " + std::to_string(slot) + " is not open");
}

void ngram_drafter::begin(int32_t slot, std::span<const int32_t>) {
  if (slot < 0 || slot >= p_.max_slots)
    throw invalid_argument_error("ngram_drafter: slot " + std::to_string(slot) + " out of range [0, " +
                                 std::to_string(p_.max_slots) + ")");
  open_[static_cast<size_t>(slot)] = 1;
}

int32_t ngram_drafter::lookup(std::span<const int32_t> ctx, std::span<int32_t> out) const {
  const int64_t len = static_cast<int64_t>(ctx.size());
  if (out.empty()) return 0;
  for (int64_t n = std::min<int64_t>(p_.max_n, len - 1); n >= p_.min_n; --n) {
    const int32_t* suffix = ctx.data() + (len - n);
    // Most recent first: start i so that the match ends before the suffix starts, i.e. at
    // least one token follows it.
    for (int64_t i = len - n - 1; i >= 0; --i) {
      if (ctx[static_cast<size_t>(i)] != suffix[0]) continue;
      if (!std::equal(suffix, suffix + n, ctx.data() + i)) continue;
      const int64_t from = i + n;
      const int64_t count = std::min<int64_t>(static_cast<int64_t>(out.size()), len - from);
      std::copy(ctx.data() + from, ctx.data() + from + count, out.data());
      return static_cast<int32_t>(count);
    }
  }
  return 0;
}

void ngram_drafter::propose(std::span<const propose_request> batch, draft_batch& out) {
  for (const propose_request& r : batch) {
    check_open(r.slot);
    const int32_t room = out.params().gamma_max - out.length(r.slot);
    const int32_t want = std::min({r.max_drafts, room, static_cast<int32_t>(scratch_.size())});
    if (want <= 0) continue;
    const int32_t n = lookup(r.context, std::span<int32_t>(scratch_.data(), static_cast<size_t>(want)));
    for (int32_t k = 0; k < n; ++k) out.push_one_hot(r.slot, scratch_[static_cast<size_t>(k)]);
  }
}

void ngram_drafter::on_commit(int32_t slot, const commit_info&) { check_open(slot); }

void ngram_drafter::rollback(int32_t slot, int32_t) { check_open(slot); }

void ngram_drafter::end(int32_t slot) {
  check_open(slot);
  open_[static_cast<size_t>(slot)] = 0;
}

}  // namespace dspark

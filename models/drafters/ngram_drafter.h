// Prompt-lookup (n-gram) drafter: proposes the tokens that followed the most recent earlier
// occurrence of the context's last n tokens, trying the longest n first.
//
// Worked example: context [5 9 2 7 5 9 3 5 9], min_n 1, max_n 3, max_drafts 3.
//   n = 3: suffix [3 5 9] occurs nowhere earlier.
//   n = 2: suffix [5 9] occurs earlier at index 0 and index 4 (index 7 is the suffix itself).
//          The most recent, index 4, wins: it was followed by [3 5 9], which is proposed.
//          (Index 0 would have proposed [2 7 5].)
// A match near the end proposes fewer tokens: context [1 2 1], n = 1, suffix [1] matches index
// 0, followed by [2 1] (the context ends there), so only 2 drafts.
//
// Drafts are deterministic given the context, so each carries a one-hot distribution: the
// verifier then accepts x with probability p_t(x) and on rejection samples p_t with x removed,
// which is exactly the target distribution. No confidence estimate (reported as 1).
//
// Cost: O(context * n) per n tried per request, with no state beyond the context the decoder
// passes in; begin/on_commit/rollback/end only track which slots are open.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "models/drafters/drafter.h"

namespace dspark {

struct ngram_drafter_params {
  int32_t min_n = 1;      // shortest suffix to match, >= 1
  int32_t max_n = 4;      // longest suffix to match, >= min_n
  int32_t max_slots = 1;  // request slots
};

class ngram_drafter final : public drafter {
 public:
  // Throws invalid_argument_error for min_n < 1, max_n < min_n or max_slots < 1.
  explicit ngram_drafter(const ngram_drafter_params& p);

  const drafter_caps& caps() const override { return caps_; }
  void begin(int32_t slot, std::span<const int32_t> prompt) override;
  void propose(std::span<const propose_request> batch, draft_batch& out) override;
  void on_commit(int32_t slot, const commit_info& c) override;
  void rollback(int32_t slot, int32_t n_context) override;
  void end(int32_t slot) override;

  // The lookup itself: writes up to out.size() tokens that followed the most recent earlier
  // match of context's longest matching suffix (n in [min_n, max_n]) and returns how many.
  int32_t lookup(std::span<const int32_t> context, std::span<int32_t> out) const;

 private:
  void check_open(int32_t slot) const;

  ngram_drafter_params p_;
  drafter_caps caps_;
  std::vector<uint8_t> open_;         // [max_slots]
  std::vector<int32_t> scratch_;      // [256] drafts of one request (gamma_max bound)
};

}  // namespace dspark

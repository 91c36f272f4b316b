// A drafter decorator that skips drafting for requests whose drafts are not expected to pay
// (issue 7 item 5; the rule and its reasoning: draft_skip_rule.h). It wraps any drafter, so the
// decoding loop (engine/spec/spec_decoder.h) and every drafter stay as they are: it lives with
// the drafters because it is one, and it only decides which requests reach the inner propose.
//
// Contract with the inner drafter (drafter.h):
//   - begin / on_commit / rollback / end are ALL forwarded: a skipped request still commits its
//     token every step, and the inner drafter's context and feature cache must follow it;
//   - propose gets only the requests that draft this round: for a batched drafter (DSpark's
//     parallel pass) the skipped ones cost nothing; a skipped request proposes 0 drafts and
//     decodes plainly in the same verify step.
// Every request in a round whose budget is > 0 goes through draft_skip_rule::decide;
// a drafted round's on_commit feeds the rule (accepted drafts, and the drafter's own expected
// accepted drafts sum_k prod_{i<=k} c_i when it has a confidence head).
//
// With enabled = false it forwards everything and only keeps the statistics (drafter time), so
// `--draft-skip off` measures the cost that `auto` saves.
// With params.measured_cost ("auto" without a COST) the rule's draft cost is measured online
// each round (draft_cost_meter.h): the drafter's propose / commit time against the rest of the
// round, per request, so the threshold follows the load.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/spec/metrics.h"
#include "models/drafters/draft_cost_meter.h"
#include "models/drafters/draft_skip_rule.h"
#include "models/drafters/drafter.h"

namespace dspark {

// Its counters are the metrics' (engine/spec/metrics.h), so a run attaches them as they are.
using draft_skip_stats = draft_skip_counts;

class skipping_drafter final : public drafter {
 public:
  // inner non-null; max_slots as the inner drafter's. invalid_argument_error otherwise.
  skipping_drafter(std::unique_ptr<drafter> inner, int32_t max_slots, const draft_skip_params& p,
                   bool enabled = true);

  const drafter_caps& caps() const override { return inner_->caps(); }
  void begin(int32_t slot, std::span<const int32_t> prompt) override;
  void propose(std::span<const propose_request> batch, draft_batch& out) override;
  void on_commit(int32_t slot, const commit_info& c) override;
  void before_target_forward() override { inner_->before_target_forward(); }
  void rollback(int32_t slot, int32_t n_context) override;
  void end(int32_t slot) override;

  const draft_skip_stats& stats() const { return stats_; }
  bool enabled() const { return enabled_; }
  const draft_skip_rule& rule() const { return rule_; }
  const draft_cost_meter& cost_meter() const { return meter_; }
  drafter& inner() { return *inner_; }

 private:
  int32_t checked(int32_t slot) const;

  std::unique_ptr<drafter> inner_;
  draft_skip_rule rule_;
  draft_cost_meter meter_;
  bool enabled_;
  std::vector<draft_skip_state> state_;       // [max_slots]
  std::vector<uint8_t> drafted_;              // [max_slots] 1 while a drafted round awaits on_commit
  // That round's head expectation per verified-prefix length: [max_slots][k_max_chain] cumulative
  // sums of survival products, and the chain length per slot (-1: no head or not drafted).
  static constexpr size_t k_max_chain = 64;
  std::vector<int32_t> pending_len_;
  std::vector<double> pending_cum_;
  std::vector<propose_request> sub_;          // the requests passed on; capacity max_slots
  draft_skip_stats stats_;
};

// Parses the CLI form "off", "auto" (the draft cost measured online) or "auto:COST" (a fixed
// COST = draft_cost, >= 0). Returns false for "off"; invalid_argument_error naming the forms for
// anything else.
bool parse_draft_skip(const std::string& s, draft_skip_params& p);

}  // namespace dspark

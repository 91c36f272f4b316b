// A spec_policy decorator that measures the scheduler itself (issue 7 item 6): per step, the
// time policy.plan takes (steady_clock around the inner plan) and the verify budget it chose.
// It wraps any policy, so the decoding loop (engine/spec/spec_decoder.h) stays untouched; the
// server's scheduler (actors/scheduler.h) wraps its policy in one and exports the numbers.
//
// Per plan call (one verify step):
//   budget      = sum over requests of (n_verify_r + 1): the tokens the verify forward carries
//                 (x0 and the admitted drafts of each request)
//   drafts      = sum over requests of n_verify_r
//   plan time   = seconds inside the inner plan
// Kept: counts, sums and the largest budget; the plan times of the last k_window steps in a ring
// (allocated once), from which plan_seconds_quantile() is computed on demand (off the hot path).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/spec/policy.h"

namespace dspark {

struct scheduler_stats {
  int64_t plans = 0;            // verify steps planned
  int64_t request_rounds = 0;   // (request, step) pairs planned
  int64_t drafts_verified = 0;  // sum of n_verify
  int64_t budget_sum = 0;       // sum of per-step budgets (tokens verified per step)
  int32_t budget_max = 0;       // largest per-step budget
  double plan_seconds = 0.0;    // total time inside plan

  double mean_budget() const { return plans ? static_cast<double>(budget_sum) / static_cast<double>(plans) : 0.0; }
  // Mean drafts verified per request per step (the per-request mean verify length).
  double mean_verify_length() const {
    return request_rounds ? static_cast<double>(drafts_verified) / static_cast<double>(request_rounds) : 0.0;
  }
  double mean_plan_seconds() const { return plans ? plan_seconds / static_cast<double>(plans) : 0.0; }
};

class timed_policy final : public spec_policy {
 public:
  static constexpr int32_t k_window = 4096;  // plan times kept for quantiles

  // inner non-null (invalid_argument_error otherwise).
  explicit timed_policy(std::unique_ptr<spec_policy> inner);
  std::string name() const override { return inner_->name(); }
  int32_t draft_budget() const override { return inner_->draft_budget(); }
  void plan(std::span<const policy_request> batch, std::span<int32_t> n_verify) override;
  const sps_table* step_curve() const override { return inner_->step_curve(); }
  void set_carried_rows(int64_t rows) override { inner_->set_carried_rows(rows); }
  bool warmed_up() const override { return inner_->warmed_up(); }

  const scheduler_stats& stats() const { return stats_; }
  // The q-quantile (nearest rank, q in [0, 1]) of the plan times of the last k_window steps;
  // 0 before the first step.
  double plan_seconds_quantile(double q) const;
  spec_policy& inner() { return *inner_; }

 private:
  std::unique_ptr<spec_policy> inner_;
  scheduler_stats stats_;
  std::vector<double> ring_;  // [k_window] plan seconds, the newest at (plans - 1) % k_window
};

}  // namespace dspark

// The production variant of the confidence scheduler (method doc 3.3): the verify capacity of
// a step is fixed from confidences `lag` steps old, and the current step fills it with the top
// candidates by the fresh survival products.
//
// Why: Algorithm 1's early stop is trapped by a jagged SPS(B) curve, and a shape chosen from
// the current step's own confidences is known too late for CUDA-graph replay. Here
//
//   capacity  D_t = the number of drafts a GLOBAL search (no early stop) over step t - lag's
//                   survivals admits, i.e. argmax over prefixes of that step's order of
//                   tau(B) * SPS(B), rescaled to the current number of drafting requests
//                   (those with a positive first confidence; with draft skipping many rounds
//                   have none); when nobody drafted in step t - lag, the newest older step
//                   that had drafting requests stands in (without it, a request that skipped
//                   two steps ago would find capacity 0 whenever it drafts again, and draft
//                   skipping, seeing nothing verified, would keep it skipping);
//   admission       the first D_t candidates of the current step's survival order.
//
// Lossless: D_t depends only on older steps, never on the tokens now being verified; and
// whether (r, j) lands in the top D_t depends on a_{r,j} and other requests' values, which do
// not depend on x_{r,j} (a_{r,j+1} <= a_{r,j}, and ties go to the lower j). The global search
// on stale values is safe for the same reason: those tokens were already decided.
//
// Until `lag` steps have been seen the capacity is 0 (plain decoding for the first steps).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "engine/spec/policy.h"
#include "engine/spec/sps_table.h"

namespace dspark {

class async_capacity_policy final : public spec_policy {
 public:
  // gamma in [1, 256], max_requests >= 1, lag in [1, 8].
  async_capacity_policy(int32_t gamma, int32_t max_requests, sps_table sps, int32_t lag = 2);
  // One curve for every R: sps[b] for b >= 1 (sps[0] unused), positive.
  async_capacity_policy(int32_t gamma, int32_t max_requests, std::vector<double> sps, int32_t lag = 2)
      : async_capacity_policy(gamma, max_requests, sps_table(std::move(sps)), lag) {}
  std::string name() const override;
  int32_t draft_budget() const override { return gamma_; }
  void plan(std::span<const policy_request> batch, std::span<int32_t> n_verify) override;
  const sps_table* step_curve() const override { return &sps_; }
  // The search prices with the carried rows of the step it runs in (those of the step it
  // plans for, lag steps later, are not known yet).
  void set_carried_rows(int64_t rows) override { carried_ = rows > 0 ? rows : 0; }

  // Once a step with drafting requests is `lag` steps old (before that the capacity is 0).
  bool warmed_up() const override { return ratio_requests_ > 0; }

  // Draft capacity the last plan() used (for metrics and tests).
  int32_t last_capacity() const { return last_capacity_; }

 private:
  // What a step leaves for the step `lag` later: its global-search optimum.
  struct stale_capacity {
    int32_t n_requests = 0;  // drafting requests
    int32_t n_drafts = 0;
  };
  // The drafts a global search over batch's survival order admits (order_ holds that order).
  int32_t global_search(std::span<const policy_request> batch);

  int32_t gamma_;
  int32_t max_requests_;
  int32_t lag_;
  sps_table sps_;
  int64_t carried_ = 0;  // set_carried_rows
  std::vector<survival_candidate> order_;  // reserved max_requests * gamma at construction
  std::vector<stale_capacity> history_;    // ring of the last `lag` steps
  int64_t steps_ = 0;
  int32_t last_capacity_ = 0;
  // The drafts per drafting request of the newest stale step that had drafting requests.
  int32_t ratio_drafts_ = 0;
  int32_t ratio_requests_ = 0;
};

}  // namespace dspark

// Scheduling policies: per step, how many of each request's proposed drafts the target
// verifies. The hook sees the whole batch at once, because the best policies trade acceptance
// against the cost of a bigger verify batch (method doc 3.2, Algorithm 1).
//
//   drafter.propose(budget = policy.draft_budget())  ->  chains with confidences c_{r,1..g_r}
//   policy.plan(batch)                                ->  l_r in [0, min(g_r, max_verify_r)]
//   target verifies [x0, x_1..x_{l_r}] per request
//
// Lossless rule for every policy: whether draft k is verified may depend on the confidences,
// which by the drafter contract depend only on x_<k and the context, never on x_k itself; so
// each admission is decided before the token it admits is looked at (non-anticipating), and
// the verifier's output stays exactly the target's whatever the chosen l_r.
//
// Implementations:
//   fixed_gamma_policy            l_r = min(g_r, gamma)
//   threshold_policy              l_r = first k whose cumulative product c_1...c_k < threshold
//   confidence_scheduled_policy   Algorithm 1: greedy admission by survival a_{r,j} with early
//                                 stop, maximising tau * SPS(R, B) over the whole batch
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "engine/spec/sps_table.h"

namespace dspark {

// One request as the policy sees it.
struct policy_request {
  int32_t slot = 0;
  std::span<const float> confidence;  // [g_r] c_{r,k} of the proposed drafts, in [0, 1]
  int32_t max_verify = 0;             // hard cap (tokens left before max_tokens / n_ctx), >= 0
};

// A (request, draft) pair a confidence-driven scheduler may admit (engine/spec/survival_order.h).
struct survival_candidate {
  double a;   // survival a_{r,j} = c_{r,1} * ... * c_{r,j}
  int32_t r;  // request index in the batch
  int32_t j;  // draft index, 0-based (the verify length that admits it is j + 1)
};

class spec_policy {
 public:
  virtual ~spec_policy() = default;
  // Short name for reports ("fixed:4", "threshold:0.80").
  virtual std::string name() const = 0;
  // Most drafts a request is asked to propose in a step; the drafter may propose fewer.
  virtual int32_t draft_budget() const = 0;
  // Writes n_verify[i] in [0, min(batch[i].confidence.size(), batch[i].max_verify)] for every i.
  virtual void plan(std::span<const policy_request> batch, std::span<int32_t> n_verify) = 0;
  // The target's step-time curve the policy schedules on, if it has one (scheduled, async):
  // the speculation gate prices plain decoding with it (spec_gate.h).
  virtual const sps_table* step_curve() const { return nullptr; }
  // Rows the next plan's forward carries besides its verify rows (prompt chunks riding in it,
  // spec_decoder_options::fused_prefill), set before each plan. A curve-based policy prices a
  // verify of B rows at SPS(B + rows): the chunks are paid for either way, so what a draft
  // costs is the step time it adds on top of them. Others ignore it.
  virtual void set_carried_rows(int64_t rows) { (void)rows; }
  // False while the policy cannot admit drafts yet for reasons of its own (async K has no
  // capacity before its first `lag` steps): the speculation gate does not judge speculation
  // by such steps, whose drafts were never offered a verify.
  virtual bool warmed_up() const { return true; }
};

// Verifies every proposed draft, up to gamma.
class fixed_gamma_policy final : public spec_policy {
 public:
  // gamma in [0, 256]; 0 verifies nothing (plain decoding through the speculative loop).
  explicit fixed_gamma_policy(int32_t gamma);
  std::string name() const override;
  int32_t draft_budget() const override { return gamma_; }
  void plan(std::span<const policy_request> batch, std::span<int32_t> n_verify) override;

 private:
  int32_t gamma_;
};

// Static confidence threshold (method doc 3.1 step 3 / 3.4): keeps the longest prefix whose
// cumulative confidence product stays >= threshold. threshold 0 is fixed gamma.
class threshold_policy final : public spec_policy {
 public:
  // gamma in [1, 256], threshold in [0, 1].
  threshold_policy(int32_t gamma, float threshold);
  std::string name() const override;
  int32_t draft_budget() const override { return gamma_; }
  void plan(std::span<const policy_request> batch, std::span<int32_t> n_verify) override;

 private:
  int32_t gamma_;
  float threshold_;
};

// Hardware-aware prefix scheduler (method doc 3.2, Algorithm 1). sps is the measured target
// forward steps per second for a verify batch of B tokens over R requests (sps_table: the
// batch's R picks the row, so drafts at low load are priced at their own cost and not as new
// requests). Admits (r, j) in descending survival a_{r,j} = c_{r,1}...c_{r,j} while
// tau * SPS(R, B + carried rows) keeps improving and stops at the first non-improvement
// (early stop: a global search would let a_{r,j+1}, which depends on x_{r,j}, decide whether
// x_{r,j} is admitted).
class confidence_scheduled_policy final : public spec_policy {
 public:
  // gamma in [1, 256], max_requests >= 1.
  confidence_scheduled_policy(int32_t gamma, int32_t max_requests, sps_table sps);
  // One curve for every R: sps[b] for b >= 1 (sps[0] unused), positive.
  confidence_scheduled_policy(int32_t gamma, int32_t max_requests, std::vector<double> sps)
      : confidence_scheduled_policy(gamma, max_requests, sps_table(std::move(sps))) {}
  std::string name() const override;
  int32_t draft_budget() const override { return gamma_; }
  void plan(std::span<const policy_request> batch, std::span<int32_t> n_verify) override;
  const sps_table* step_curve() const override { return &sps_; }
  void set_carried_rows(int64_t rows) override { carried_ = rows > 0 ? rows : 0; }

 private:
  int32_t gamma_;
  int32_t max_requests_;
  sps_table sps_;
  int64_t carried_ = 0;  // set_carried_rows
  std::vector<survival_candidate> order_;  // [max_requests * gamma], capacity reserved at construction
};

}  // namespace dspark

// Speculative-decoding metrics, per request and merged over requests: acceptance length, per
// position acceptance, draft token counts, and latency (TTFT, TPOT, tokens/s).
//
// Definitions (method doc 7; position k is the k-th draft of a round, 0-based):
//   tau (acceptance length) = sum over rounds of (accepted drafts + 1 if the round emitted a
//       correction/bonus token) / rounds. The bonus counts; a round that ended on an accepted
//       stop token emits none. Plain decoding has tau = 1.
//   verified_at[k]  rounds that verified draft k           (l > k)
//   reached_at[k]   rounds that verified draft k after accepting drafts 0..k-1
//   accepted_at[k]  rounds that accepted draft k            (a > k)
//   conditional acceptance at k   = accepted_at[k] / reached_at[k]   (the paper's Fig.2 value)
//   unconditional acceptance at k = accepted_at[k] / rounds          (accept_rate@k, prefix survival)
//   calibration at k (drafters with a confidence head): the cumulative confidence
//       a_k = c_0 * ... * c_k of each verified draft k against the indicator "drafts 0..k all
//       accepted", in 20 equal-width bins; ECE_k = sum over bins of |mean a - accepted fraction|
//       weighted by the bin's share (DeepSpec's per-position ECE of cumprod confidence).
//   TTFT = first token time - request start; TPOT = (end - first token) / (generated - 1);
//   tokens/s = generated tokens / wall seconds (the sum of request durations unless a run sets
//   its own wall time, as a batched run does).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <nlohmann/json.hpp>

namespace dspark {

// Wall-clock marks of one request, in seconds on one steady clock.
struct request_timing {
  double t_start = 0.0;
  double t_first_token = 0.0;
  double t_end = 0.0;
  int64_t prompt_tokens = 0;
  int64_t generated_tokens = 0;  // including the first token
};

// Difficulty-aware draft skipping (models/drafters/skipping_drafter.h), counted by the
// decorator around the drafter (the decoding loop never sees a skip: the request simply has no
// drafts that round) and attached to a run's metrics by the command that ran it.
struct draft_skip_counts {
  int64_t request_rounds = 0;  // (request, round) pairs with a draft budget > 0
  int64_t skipped_rounds = 0;  // of those, not drafted
  int64_t probe_rounds = 0;    // drafted only to re-probe a skipped request
  int64_t drafts_saved = 0;    // draft budget of the skipped rounds
  double propose_s = 0.0;      // time inside the drafter's propose
  double commit_s = 0.0;       // time inside the drafter's on_commit
};

class spec_metrics {
 public:
  // Per-position counters for drafts 0..gamma_max-1 (allocated here, once).
  explicit spec_metrics(int32_t gamma_max = 0);

  // One verify round: drafts proposed by the drafter, verified after the policy, accepted by
  // the verifier, and whether a correction/bonus token was emitted. Throws
  // invalid_argument_error unless 0 <= accepted <= verified <= proposed and verified <= gamma_max.
  void record_round(int32_t n_proposed, int32_t n_verified, int32_t n_accepted, bool emitted_next);
  // Calibration of one round's confidences: c[0..n_verified) of the verified drafts, of which
  // the verifier accepted n_accepted (before any stop-token adjustment).
  void record_confidences(std::span<const float> c, int32_t n_verified, int32_t n_accepted);
  // A finished (or cancelled) request's timing.
  void record_request(const request_timing& t);
  // Adds another request's (or worker's) counts; per-position vectors grow to the longer one.
  void merge(const spec_metrics& o);
  // Overrides the wall time tokens/s divides by (a batched run's elapsed time).
  void set_wall_seconds(double s) { wall_override_s_ = s; }
  // Attaches draft-skipping counts (to_json then reports them as "draft_skip"); merge adds them.
  void add_draft_skip(const draft_skip_counts& c);
  const draft_skip_counts& draft_skip() const { return skip_; }

  int64_t verify_steps() const { return rounds_; }
  int64_t draft_tokens_proposed() const { return proposed_; }
  int64_t draft_tokens_verified() const { return verified_; }
  int64_t draft_tokens_accepted() const { return accepted_; }
  int64_t round_tokens() const { return round_tokens_; }  // accepted + emitted next, summed
  int64_t requests() const { return requests_; }
  int64_t generated_tokens() const { return generated_; }
  int32_t positions() const { return static_cast<int32_t>(accepted_at_.size()); }
  int64_t verified_at(int32_t k) const { return verified_at_[static_cast<size_t>(k)]; }
  int64_t reached_at(int32_t k) const { return reached_at_[static_cast<size_t>(k)]; }
  int64_t accepted_at(int32_t k) const { return accepted_at_[static_cast<size_t>(k)]; }

  double acceptance_length() const;                 // tau; 0 with no rounds
  double acceptance_rate() const;                   // accepted / verified drafts; 0 with none
  double conditional_acceptance(int32_t k) const;   // 0 when never reached
  double unconditional_acceptance(int32_t k) const; // 0 with no rounds
  int64_t calibrated_at(int32_t k) const;          // drafts k with a recorded confidence
  double expected_calibration_error(int32_t k) const;  // ECE_k; 0 when none recorded
  double mean_cumulative_confidence(int32_t k) const;  // mean a_k; 0 when none recorded
  double mean_ttft_s() const;
  double mean_tpot_s() const;                       // over requests with >= 2 tokens
  double tokens_per_s() const;

  // Every counter and derived value above, for --json stats.
  nlohmann::json to_json() const;

 private:
  int64_t rounds_ = 0;
  int64_t proposed_ = 0;
  int64_t verified_ = 0;
  int64_t accepted_ = 0;
  int64_t round_tokens_ = 0;
  std::vector<int64_t> verified_at_;  // [gamma_max]
  std::vector<int64_t> reached_at_;   // [gamma_max]
  std::vector<int64_t> accepted_at_;  // [gamma_max]
  static constexpr int32_t k_calibration_bins = 20;
  struct calibration_bin {
    int64_t n = 0;
    double sum_a = 0.0;
    double sum_accepted = 0.0;
  };
  std::vector<calibration_bin> calibration_;  // [gamma_max][k_calibration_bins]
  int64_t requests_ = 0;
  int64_t prompt_tokens_ = 0;
  int64_t generated_ = 0;
  double sum_ttft_s_ = 0.0;
  double sum_tpot_s_ = 0.0;
  int64_t tpot_requests_ = 0;
  double sum_wall_s_ = 0.0;
  double wall_override_s_ = -1.0;
  draft_skip_counts skip_;
  bool has_skip_ = false;
};

}  // namespace dspark

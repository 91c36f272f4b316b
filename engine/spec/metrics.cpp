// spec_metrics: counters and derived acceptance / latency figures.
#include "engine/spec/metrics.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "common/error.h"

namespace dspark {

spec_metrics::spec_metrics(int32_t gamma_max) {
  if (gamma_max < 0 || gamma_max > 256)
    throw invalid_argument_error("spec_metrics: gamma_max " + std::to_string(gamma_max) + " out of range [0, 256]");
  verified_at_.assign(static_cast<size_t>(gamma_max), 0);
  reached_at_.assign(static_cast<size_t>(gamma_max), 0);
  accepted_at_.assign(static_cast<size_t>(gamma_max), 0);
  calibration_.assign(static_cast<size_t>(gamma_max) * k_calibration_bins, {});
}

void spec_metrics::record_confidences(std::span<const float> c, int32_t n_verified, int32_t n_accepted) {
  if (n_verified < 0 || n_verified > positions() || static_cast<size_t>(n_verified) > c.size() || n_accepted < 0 ||
      n_accepted > n_verified)
    throw invalid_argument_error("spec_metrics: confidences of " + std::to_string(c.size()) + " drafts, verified " +
                                 std::to_string(n_verified) + ", accepted " + std::to_string(n_accepted));
  double a = 1.0;
  for (int32_t k = 0; k < n_verified; ++k) {
    a *= std::clamp(static_cast<double>(c[static_cast<size_t>(k)]), 0.0, 1.0);
    const int32_t bin = std::min(k_calibration_bins - 1, static_cast<int32_t>(a * k_calibration_bins));
    calibration_bin& b = calibration_[static_cast<size_t>(k) * k_calibration_bins + static_cast<size_t>(bin)];
    ++b.n;
    b.sum_a += a;
    b.sum_accepted += k < n_accepted ? 1.0 : 0.0;
  }
}

int64_t spec_metrics::calibrated_at(int32_t k) const {
  if (k < 0 || k >= positions()) return 0;
  int64_t n = 0;
  for (int32_t i = 0; i < k_calibration_bins; ++i)
    n += calibration_[static_cast<size_t>(k) * k_calibration_bins + static_cast<size_t>(i)].n;
  return n;
}

double spec_metrics::expected_calibration_error(int32_t k) const {
  const int64_t total = calibrated_at(k);
  if (total == 0) return 0.0;
  double e = 0.0;
  for (int32_t i = 0; i < k_calibration_bins; ++i) {
    const calibration_bin& b = calibration_[static_cast<size_t>(k) * k_calibration_bins + static_cast<size_t>(i)];
    if (b.n) e += std::abs(b.sum_a - b.sum_accepted) / static_cast<double>(total);  // n/N * |mean a - mean acc|
  }
  return e;
}

double spec_metrics::mean_cumulative_confidence(int32_t k) const {
  const int64_t total = calibrated_at(k);
  if (total == 0) return 0.0;
  double s = 0.0;
  for (int32_t i = 0; i < k_calibration_bins; ++i)
    s += calibration_[static_cast<size_t>(k) * k_calibration_bins + static_cast<size_t>(i)].sum_a;
  return s / static_cast<double>(total);
}

void spec_metrics::record_round(int32_t n_proposed, int32_t n_verified, int32_t n_accepted, bool emitted_next) {
  if (!(0 <= n_accepted && n_accepted <= n_verified && n_verified <= n_proposed) ||
      n_verified > positions())
    throw invalid_argument_error("spec_metrics: round with proposed " + std::to_string(n_proposed) +
                                 ", verified " + std::to_string(n_verified) + ", accepted " +
                                 std::to_string(n_accepted) + "; need 0 <= accepted <= verified <= proposed"
                                 " and verified <= gamma_max = " + std::to_string(positions()));
  ++rounds_;
  proposed_ += n_proposed;
  verified_ += n_verified;
  accepted_ += n_accepted;
  round_tokens_ += n_accepted + (emitted_next ? 1 : 0);
  for (int32_t k = 0; k < n_verified; ++k) {
    ++verified_at_[static_cast<size_t>(k)];
    if (k <= n_accepted) ++reached_at_[static_cast<size_t>(k)];  // drafts 0..k-1 all accepted
    if (k < n_accepted) ++accepted_at_[static_cast<size_t>(k)];
  }
}

void spec_metrics::record_request(const request_timing& t) {
  ++requests_;
  prompt_tokens_ += t.prompt_tokens;
  generated_ += t.generated_tokens;
  if (t.generated_tokens > 0) sum_ttft_s_ += t.t_first_token - t.t_start;
  if (t.generated_tokens > 1) {
    sum_tpot_s_ += (t.t_end - t.t_first_token) / static_cast<double>(t.generated_tokens - 1);
    ++tpot_requests_;
  }
  sum_wall_s_ += t.t_end - t.t_start;
}

void spec_metrics::merge(const spec_metrics& o) {
  rounds_ += o.rounds_;
  proposed_ += o.proposed_;
  verified_ += o.verified_;
  accepted_ += o.accepted_;
  round_tokens_ += o.round_tokens_;
  const size_t n = std::max(verified_at_.size(), o.verified_at_.size());
  verified_at_.resize(n, 0);
  reached_at_.resize(n, 0);
  accepted_at_.resize(n, 0);
  calibration_.resize(n * k_calibration_bins);
  for (size_t i = 0; i < o.calibration_.size(); ++i) {
    calibration_[i].n += o.calibration_[i].n;
    calibration_[i].sum_a += o.calibration_[i].sum_a;
    calibration_[i].sum_accepted += o.calibration_[i].sum_accepted;
  }
  for (size_t k = 0; k < o.verified_at_.size(); ++k) {
    verified_at_[k] += o.verified_at_[k];
    reached_at_[k] += o.reached_at_[k];
    accepted_at_[k] += o.accepted_at_[k];
  }
  requests_ += o.requests_;
  prompt_tokens_ += o.prompt_tokens_;
  generated_ += o.generated_;
  sum_ttft_s_ += o.sum_ttft_s_;
  sum_tpot_s_ += o.sum_tpot_s_;
  tpot_requests_ += o.tpot_requests_;
  sum_wall_s_ += o.sum_wall_s_;
  if (o.has_skip_) add_draft_skip(o.skip_);
}

void spec_metrics::add_draft_skip(const draft_skip_counts& c) {
  has_skip_ = true;
  skip_.request_rounds += c.request_rounds;
  skip_.skipped_rounds += c.skipped_rounds;
  skip_.probe_rounds += c.probe_rounds;
  skip_.drafts_saved += c.drafts_saved;
  skip_.propose_s += c.propose_s;
  skip_.commit_s += c.commit_s;
}

double spec_metrics::acceptance_length() const {
  return rounds_ ? static_cast<double>(round_tokens_) / static_cast<double>(rounds_) : 0.0;
}

double spec_metrics::acceptance_rate() const {
  return verified_ ? static_cast<double>(accepted_) / static_cast<double>(verified_) : 0.0;
}

double spec_metrics::conditional_acceptance(int32_t k) const {
  if (k < 0 || k >= positions() || reached_at_[static_cast<size_t>(k)] == 0) return 0.0;
  return static_cast<double>(accepted_at_[static_cast<size_t>(k)]) /
         static_cast<double>(reached_at_[static_cast<size_t>(k)]);
}

double spec_metrics::unconditional_acceptance(int32_t k) const {
  if (k < 0 || k >= positions() || rounds_ == 0) return 0.0;
  return static_cast<double>(accepted_at_[static_cast<size_t>(k)]) / static_cast<double>(rounds_);
}

double spec_metrics::mean_ttft_s() const {
  return requests_ ? sum_ttft_s_ / static_cast<double>(requests_) : 0.0;
}

double spec_metrics::mean_tpot_s() const {
  return tpot_requests_ ? sum_tpot_s_ / static_cast<double>(tpot_requests_) : 0.0;
}

double spec_metrics::tokens_per_s() const {
  const double wall = wall_override_s_ >= 0.0 ? wall_override_s_ : sum_wall_s_;
  return wall > 0.0 ? static_cast<double>(generated_) / wall : 0.0;
}

nlohmann::json spec_metrics::to_json() const {
  nlohmann::json j;
  j["acceptance_length"] = acceptance_length();
  j["acceptance_rate"] = acceptance_rate();
  j["verify_steps"] = rounds_;
  j["draft_tokens_proposed"] = proposed_;
  j["draft_tokens_verified"] = verified_;
  j["draft_tokens_accepted"] = accepted_;
  nlohmann::json cond = nlohmann::json::array(), uncond = nlohmann::json::array();
  for (int32_t k = 0; k < positions(); ++k) {
    cond.push_back(conditional_acceptance(k));
    uncond.push_back(unconditional_acceptance(k));
  }
  j["acceptance_conditional"] = cond;
  j["acceptance_unconditional"] = uncond;
  bool calibrated = false;
  for (int32_t k = 0; k < positions(); ++k) calibrated |= calibrated_at(k) > 0;
  if (calibrated) {
    nlohmann::json ece = nlohmann::json::array(), conf = nlohmann::json::array();
    for (int32_t k = 0; k < positions(); ++k) {
      ece.push_back(expected_calibration_error(k));
      conf.push_back(mean_cumulative_confidence(k));
    }
    j["confidence_ece"] = ece;
    j["confidence_mean_cumulative"] = conf;
  }
  j["requests"] = requests_;
  j["prompt_tokens"] = prompt_tokens_;
  j["generated_tokens"] = generated_;
  j["ttft_s"] = mean_ttft_s();
  j["tpot_s"] = mean_tpot_s();
  j["tokens_per_s"] = tokens_per_s();
  if (has_skip_) {
    j["draft_skip"] = {{"request_rounds", skip_.request_rounds}, {"skipped_rounds", skip_.skipped_rounds},
                       {"probe_rounds", skip_.probe_rounds},     {"drafts_saved", skip_.drafts_saved},
                       {"drafter_propose_s", skip_.propose_s},   {"drafter_commit_s", skip_.commit_s}};
  }
  return j;
}

}  // namespace dspark

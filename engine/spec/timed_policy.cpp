// timed_policy: see timed_policy.h.
#include "engine/spec/timed_policy.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "common/error.h"

namespace dspark {

timed_policy::timed_policy(std::unique_ptr<spec_policy> inner) : inner_(std::move(inner)) {
  if (!inner_) throw invalid_argument_error("timed_policy: inner policy is null");
  ring_.assign(static_cast<size_t>(k_window), 0.0);
}

void timed_policy::plan(std::span<const policy_request> batch, std::span<int32_t> n_verify) {
  const auto t0 = std::chrono::steady_clock::now();
  inner_->plan(batch, n_verify);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t drafts = 0;
  for (size_t i = 0; i < batch.size(); ++i) drafts += n_verify[i];
  const int64_t budget = drafts + static_cast<int64_t>(batch.size());
  ring_[static_cast<size_t>(stats_.plans % k_window)] = s;
  ++stats_.plans;
  stats_.request_rounds += static_cast<int64_t>(batch.size());
  stats_.drafts_verified += drafts;
  stats_.budget_sum += budget;
  stats_.budget_max = std::max(stats_.budget_max, static_cast<int32_t>(budget));
  stats_.plan_seconds += s;
}

double timed_policy::plan_seconds_quantile(double q) const {
  const int64_t n = std::min<int64_t>(stats_.plans, k_window);
  if (n == 0) return 0.0;
  std::vector<double> v(ring_.begin(), ring_.begin() + n);
  const int64_t rank = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(q * static_cast<double>(n))), 1, n);
  std::nth_element(v.begin(), v.begin() + (rank - 1), v.end());
  return v[static_cast<size_t>(rank - 1)];
}

}  // namespace dspark

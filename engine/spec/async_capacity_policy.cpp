// Asynchronous capacity scheduling: stale global search, fresh top-K.
#include "engine/spec/async_capacity_policy.h"

#include <algorithm>
#include <string>
#include <utility>

#include "common/error.h"
#include "engine/spec/survival_order.h"

namespace dspark {

namespace {

// Requests with at least one draft worth a candidate (positive first survival).
int32_t drafting_requests(std::span<const policy_request> batch, int32_t gamma) {
  int32_t n = 0;
  for (const policy_request& r : batch) n += verify_cap(r, gamma) > 0 && r.confidence[0] > 0.0f ? 1 : 0;
  return n;
}

}  // namespace

async_capacity_policy::async_capacity_policy(int32_t gamma, int32_t max_requests, sps_table sps, int32_t lag)
    : gamma_(gamma), max_requests_(max_requests), lag_(lag), sps_(std::move(sps)) {
  if (gamma < 1 || gamma > 256)
    throw invalid_argument_error("async_capacity_policy: gamma " + std::to_string(gamma) + " out of range [1, 256]");
  if (max_requests < 1)
    throw invalid_argument_error("async_capacity_policy: max_requests " + std::to_string(max_requests) +
                                 " must be >= 1");
  if (lag < 1 || lag > 8)
    throw invalid_argument_error("async_capacity_policy: lag " + std::to_string(lag) + " out of range [1, 8]");
  order_.reserve(static_cast<size_t>(max_requests) * static_cast<size_t>(gamma));
  history_.resize(static_cast<size_t>(lag));
}

std::string async_capacity_policy::name() const {
  return "async:" + std::to_string(gamma_) + ":lag" + std::to_string(lag_);
}

int32_t async_capacity_policy::global_search(std::span<const policy_request> batch) {
  // Unconstrained: walk the whole order and keep the best prefix, not the first local maximum.
  collect_survival_order(batch, gamma_, order_);
  const int64_t r = static_cast<int64_t>(batch.size());
  double tau = static_cast<double>(r);
  const int64_t b0 = r + carried_;
  const sps_table::curve sps = sps_.for_requests(r);
  double best = tau * sps.at(b0);
  int32_t best_n = 0;
  for (size_t i = 0; i < order_.size(); ++i) {
    tau += order_[i].a;
    const double theta = tau * sps.at(b0 + static_cast<int64_t>(i) + 1);
    if (theta > best) {
      best = theta;
      best_n = static_cast<int32_t>(i) + 1;
    }
  }
  return best_n;
}

void async_capacity_policy::plan(std::span<const policy_request> batch, std::span<int32_t> n_verify) {
  if (n_verify.size() < batch.size())
    throw invalid_argument_error("async_capacity_policy: n_verify holds " + std::to_string(n_verify.size()) +
                                 " entries for a batch of " + std::to_string(batch.size()));
  if (batch.size() > static_cast<size_t>(max_requests_))
    throw invalid_argument_error("async_capacity_policy: batch of " + std::to_string(batch.size()) +
                                 " exceeds max_requests " + std::to_string(max_requests_));
  // 1. Capacity from the step `lag` back (its slot in the ring is about to be overwritten).
  stale_capacity& slot = history_[static_cast<size_t>(steps_ % lag_)];
  // Requests join and leave, and skip drafting, between steps: keep the stale drafts per
  // drafting request. A stale step where nobody drafted says nothing; the last step that did
  // (older still, so just as independent of the drafts now verified) stands in.
  const int32_t drafting = drafting_requests(batch, gamma_);
  if (steps_ >= lag_ && slot.n_requests > 0) {
    ratio_drafts_ = slot.n_drafts;
    ratio_requests_ = slot.n_requests;
  }
  int32_t capacity = 0;
  if (ratio_requests_ > 0)
    capacity = static_cast<int32_t>(static_cast<int64_t>(ratio_drafts_) * drafting / ratio_requests_);
  // 2. This step's own global optimum, recorded for step + lag (computed before admission:
  //    it reuses order_, which step 3 rebuilds identically).
  slot = {drafting, global_search(batch)};
  ++steps_;
  // 3. Admission: the first `capacity` candidates of the fresh order (prefix-closed per request).
  for (size_t r = 0; r < batch.size(); ++r) n_verify[r] = 0;
  const size_t n = std::min(order_.size(), static_cast<size_t>(std::max(capacity, 0)));
  for (size_t i = 0; i < n; ++i) {
    const survival_candidate& c = order_[i];
    n_verify[static_cast<size_t>(c.r)] = std::max(n_verify[static_cast<size_t>(c.r)], c.j + 1);
  }
  last_capacity_ = static_cast<int32_t>(n);
}

}  // namespace dspark

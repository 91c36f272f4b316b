// Scheduling policies: fixed gamma, static confidence threshold, confidence-scheduled.
#include "engine/spec/policy.h"

#include <algorithm>
#include <cstdio>
#include <string>

#include "common/error.h"
#include "engine/spec/survival_order.h"

namespace dspark {

namespace {

void check_sizes(std::span<const policy_request> batch, std::span<int32_t> n_verify, const char* who) {
  if (n_verify.size() < batch.size())
    throw invalid_argument_error(std::string(who) + ": n_verify holds " + std::to_string(n_verify.size()) +
                                 " entries for a batch of " + std::to_string(batch.size()));
}

}  // namespace

fixed_gamma_policy::fixed_gamma_policy(int32_t gamma) : gamma_(gamma) {
  if (gamma < 0 || gamma > 256)
    throw invalid_argument_error("fixed_gamma_policy: gamma " + std::to_string(gamma) + " out of range [0, 256]");
}

std::string fixed_gamma_policy::name() const { return "fixed:" + std::to_string(gamma_); }

void fixed_gamma_policy::plan(std::span<const policy_request> batch, std::span<int32_t> n_verify) {
  check_sizes(batch, n_verify, "fixed_gamma_policy");
  for (size_t i = 0; i < batch.size(); ++i) n_verify[i] = verify_cap(batch[i], gamma_);
}

threshold_policy::threshold_policy(int32_t gamma, float threshold) : gamma_(gamma), threshold_(threshold) {
  if (gamma < 1 || gamma > 256)
    throw invalid_argument_error("threshold_policy: gamma " + std::to_string(gamma) + " out of range [1, 256]");
  if (!(threshold >= 0.0f && threshold <= 1.0f))
    throw invalid_argument_error("threshold_policy: threshold " + std::to_string(threshold) +
                                 " out of range [0, 1]");
}

std::string threshold_policy::name() const {
  char buf[48];
  std::snprintf(buf, sizeof buf, "threshold:%d:%.2f", gamma_, static_cast<double>(threshold_));
  return buf;
}

void threshold_policy::plan(std::span<const policy_request> batch, std::span<int32_t> n_verify) {
  check_sizes(batch, n_verify, "threshold_policy");
  for (size_t i = 0; i < batch.size(); ++i) {
    const int32_t cap = verify_cap(batch[i], gamma_);
    double survival = 1.0;
    int32_t l = 0;
    while (l < cap) {
      survival *= batch[i].confidence[static_cast<size_t>(l)];
      if (survival < threshold_) break;
      ++l;
    }
    n_verify[i] = l;
  }
}

confidence_scheduled_policy::confidence_scheduled_policy(int32_t gamma, int32_t max_requests, sps_table sps)
    : gamma_(gamma), max_requests_(max_requests), sps_(std::move(sps)) {
  if (gamma < 1 || gamma > 256)
    throw invalid_argument_error("confidence_scheduled_policy: gamma " + std::to_string(gamma) +
                                 " out of range [1, 256]");
  if (max_requests < 1)
    throw invalid_argument_error("confidence_scheduled_policy: max_requests " + std::to_string(max_requests) +
                                 " must be >= 1");
  order_.reserve(static_cast<size_t>(max_requests) * static_cast<size_t>(gamma));
}

std::string confidence_scheduled_policy::name() const { return "scheduled:" + std::to_string(gamma_); }

void confidence_scheduled_policy::plan(std::span<const policy_request> batch, std::span<int32_t> n_verify) {
  check_sizes(batch, n_verify, "confidence_scheduled_policy");
  if (batch.size() > static_cast<size_t>(max_requests_))
    throw invalid_argument_error("confidence_scheduled_policy: batch of " + std::to_string(batch.size()) +
                                 " exceeds max_requests " + std::to_string(max_requests_));
  for (size_t r = 0; r < batch.size(); ++r) n_verify[r] = 0;
  collect_survival_order(batch, gamma_, order_);
  const int64_t n_req = static_cast<int64_t>(batch.size());
  int64_t b = n_req + carried_;  // tau counts decode tokens only
  double tau = static_cast<double>(batch.size());
  const sps_table::curve sps = sps_.for_requests(n_req);
  double best = tau * sps.at(b);
  for (const survival_candidate& c : order_) {
    const double theta = (tau + c.a) * sps.at(b + 1);
    if (!(theta > best)) break;  // early stop: the first non-improvement ends admission
    best = theta;
    tau += c.a;
    ++b;
    n_verify[static_cast<size_t>(c.r)] = c.j + 1;
  }
}

}  // namespace dspark

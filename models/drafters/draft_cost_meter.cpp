// draft_cost_meter: see draft_cost_meter.h.
#include "models/drafters/draft_cost_meter.h"

#include <string>

#include "common/error.h"

namespace dspark {

namespace {
constexpr double k_outlier_factor = 4.0;  // a sample this many times the average is an outlier
constexpr int32_t k_outliers_to_restart = 3;
}  // namespace

draft_cost_meter::draft_cost_meter(double alpha, double initial_cost) : alpha_(alpha), initial_(initial_cost) {
  if (!(alpha > 0.0 && alpha <= 1.0))
    throw invalid_argument_error("draft_cost_meter: alpha must be in (0, 1], got " + std::to_string(alpha));
  if (!(initial_cost >= 0.0 && initial_cost < 1e6))
    throw invalid_argument_error("draft_cost_meter: initial cost must be >= 0, got " + std::to_string(initial_cost));
}

void draft_cost_meter::fold(double& avg, int32_t& run, double x) const {
  if (avg < 0.0) {
    avg = x;
    return;
  }
  if (x > k_outlier_factor * avg && ++run < k_outliers_to_restart) return;
  if (run >= k_outliers_to_restart) {
    avg = x;  // three in a row: the load changed
  } else {
    avg += alpha_ * (x - avg);
  }
  run = 0;
}

void draft_cost_meter::round_start(double t) {
  if (open_ && n_requests_ > 0) {
    const double verify = (t - start_) - draft_s_ - commit_s_;
    if (verify > 0.0) fold(verify_, verify_outliers_, verify / n_requests_);
    // Per request of the batch, not per drafted request (see the header).
    if (n_drafted_ > 0) fold(draft_, draft_outliers_, draft_s_ / n_requests_);
  }
  open_ = true;
  start_ = t;
  draft_s_ = 0.0;
  commit_s_ = 0.0;
  n_drafted_ = 0;
  n_requests_ = 0;
}

void draft_cost_meter::round_drafted(double draft_s, int32_t n_drafted, int32_t n_requests) {
  draft_s_ += draft_s > 0.0 ? draft_s : 0.0;
  n_drafted_ += n_drafted > 0 ? n_drafted : 0;
  n_requests_ += n_requests > 0 ? n_requests : 0;
}

void draft_cost_meter::committed(double s) {
  if (s > 0.0) commit_s_ += s;
}

double draft_cost_meter::cost() const {
  if (draft_ < 0.0 || verify_ <= 0.0) return initial_;
  return draft_ / verify_;
}

}  // namespace dspark

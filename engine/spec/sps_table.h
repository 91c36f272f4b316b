// SPS(B): target verify steps per second for a step of B total new tokens (every request's
// anchor plus its verified drafts), the hardware curve the confidence schedulers trade
// acceptance against (method doc 3.2). Measured at start-up by engine/spec/step_profile.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dspark {

class sps_table {
 public:
  // sps[b] for b = 1..n (sps[0] is ignored); every entry must be finite and > 0. Throws
  // invalid_argument_error otherwise.
  explicit sps_table(std::vector<double> sps);

  // B below 1 reads B = 1. B beyond the table takes the last entry's step time scaled by B / n:
  // past the profiled range a step is compute-bound, and a flat curve there would price extra
  // rows (prompt chunks carried by a verify forward, drafts on top of them) as free.
  double at(int64_t b) const {
    const int64_t last = static_cast<int64_t>(sps_.size()) - 1;
    if (b > last) return sps_[static_cast<size_t>(last)] * static_cast<double>(last) / static_cast<double>(b);
    return sps_[static_cast<size_t>(b < 1 ? 1 : b)];
  }
  int64_t max_b() const { return static_cast<int64_t>(sps_.size()) - 1; }
  const std::vector<double>& values() const { return sps_; }

 private:
  std::vector<double> sps_;
};

}  // namespace dspark

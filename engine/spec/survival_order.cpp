// Candidate collection and ordering shared by the confidence-driven schedulers.
#include "engine/spec/survival_order.h"

#include <algorithm>

namespace dspark {

int32_t verify_cap(const policy_request& r, int32_t gamma) {
  return std::max(0, std::min({static_cast<int32_t>(r.confidence.size()), r.max_verify, gamma}));
}

void collect_survival_order(std::span<const policy_request> batch, int32_t gamma,
                            std::vector<survival_candidate>& out) {
  out.clear();
  for (size_t r = 0; r < batch.size(); ++r) {
    const int32_t cap = verify_cap(batch[r], gamma);
    double a = 1.0;
    for (int32_t j = 0; j < cap; ++j) {
      a *= batch[r].confidence[static_cast<size_t>(j)];
      if (!(a > 0.0)) break;  // zero (or NaN) survival: nothing after it can pay
      out.push_back({a, static_cast<int32_t>(r), j});
    }
  }
  // std::sort, not stable_sort: it sorts in place without a temporary buffer.
  std::sort(out.begin(), out.end(), [](const survival_candidate& x, const survival_candidate& y) {
    if (x.a != y.a) return x.a > y.a;
    if (x.r != y.r) return x.r < y.r;
    return x.j < y.j;
  });
}

}  // namespace dspark

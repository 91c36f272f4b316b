// Confidences for drafters that have no confidence head (n-gram, layer-skip, EAGLE-3, DFlash,
// MTP-1), so the confidence schedulers can serve every drafter (issue 7).
//
// The estimate of c_k (P(draft k accepted | drafts < k accepted)) is the request's own
// exponentially-decayed conditional acceptance rate at position k, shrunk toward the engine-wide
// rate at k (itself shrunk toward a prior):
//
//   c_k = (acc_k + w * global_k) / (tried_k + w),   global_k = (G_acc_k + w0 * prior) / (G_tried_k + w0)
//
// where a round that verified l drafts and accepted a of them "tried" positions 1..min(a+1, l)
// and accepted positions 1..a (position a + 1 was tried and rejected). Counts decay by
// `decay` per round, so a request whose text turns predictable is noticed within a few rounds;
// the engine-wide counts decay by `global_decay` per round even when nothing was verified, so a
// rate low enough that the scheduler stops verifying drifts back to the prior and is re-tested.
//
// Lossless: the estimate uses only finished rounds, never the drafts it is attached to, so it
// satisfies the drafter contract (c_k may not depend on x_k; models/drafters/drafter.h).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace dspark {

struct online_confidence_params {
  int32_t max_slots = 1;
  int32_t gamma_max = 1;
  double prior = 0.5;        // acceptance assumed before anything is observed, (0, 1)
  double prior_weight = 2.0; // w0: pseudo-rounds behind the prior
  double shrink_weight = 2.0;// w: pseudo-rounds of the global rate behind each request's rate
  double decay = 0.9;        // per-round decay of a request's counts, (0, 1]
  double global_decay = 0.99;
};

class online_confidence {
 public:
  // Throws invalid_argument_error for parameters out of range.
  explicit online_confidence(const online_confidence_params& p);

  // A new request in `slot`: forgets the slot's history.
  void reset(int32_t slot);
  // Writes c_1..c_n (n = out.size() <= gamma_max) for `slot`.
  void fill(int32_t slot, std::span<float> out) const;
  // A verify round of `slot` checked n_verified drafts and accepted n_accepted of them.
  void observe(int32_t slot, int32_t n_verified, int32_t n_accepted);

 private:
  double global_rate(int32_t k) const;
  online_confidence_params p_;
  std::vector<double> acc_, tried_;         // [max_slots][gamma_max]
  std::vector<double> g_acc_, g_tried_;     // [gamma_max]
};

}  // namespace dspark

// Online per-position acceptance estimates.
#include "engine/spec/online_confidence.h"

#include <algorithm>
#include <string>

#include "common/error.h"

namespace dspark {

online_confidence::online_confidence(const online_confidence_params& p) : p_(p) {
  if (p.max_slots < 1 || p.gamma_max < 1 || p.gamma_max > 256)
    throw invalid_argument_error("online_confidence: max_slots >= 1 and gamma_max in [1, 256] required");
  if (!(p.prior > 0.0 && p.prior < 1.0) || !(p.prior_weight > 0.0) || !(p.shrink_weight > 0.0) ||
      !(p.decay > 0.0 && p.decay <= 1.0) || !(p.global_decay > 0.0 && p.global_decay <= 1.0))
    throw invalid_argument_error("online_confidence: prior in (0, 1), weights > 0, decays in (0, 1] required");
  const size_t n = static_cast<size_t>(p.max_slots) * static_cast<size_t>(p.gamma_max);
  acc_.assign(n, 0.0);
  tried_.assign(n, 0.0);
  g_acc_.assign(static_cast<size_t>(p.gamma_max), 0.0);
  g_tried_.assign(static_cast<size_t>(p.gamma_max), 0.0);
}

void online_confidence::reset(int32_t slot) {
  if (slot < 0 || slot >= p_.max_slots)
    throw invalid_argument_error("online_confidence: slot " + std::to_string(slot) + " out of range");
  const size_t base = static_cast<size_t>(slot) * static_cast<size_t>(p_.gamma_max);
  std::fill_n(acc_.begin() + static_cast<std::ptrdiff_t>(base), p_.gamma_max, 0.0);
  std::fill_n(tried_.begin() + static_cast<std::ptrdiff_t>(base), p_.gamma_max, 0.0);
}

double online_confidence::global_rate(int32_t k) const {
  return (g_acc_[static_cast<size_t>(k)] + p_.prior_weight * p_.prior) / (g_tried_[static_cast<size_t>(k)] + p_.prior_weight);
}

void online_confidence::fill(int32_t slot, std::span<float> out) const {
  if (slot < 0 || slot >= p_.max_slots || out.size() > static_cast<size_t>(p_.gamma_max))
    throw invalid_argument_error("online_confidence: slot or length out of range");
  const size_t base = static_cast<size_t>(slot) * static_cast<size_t>(p_.gamma_max);
  for (size_t k = 0; k < out.size(); ++k) {
    const double g = global_rate(static_cast<int32_t>(k));
    const double c = (acc_[base + k] + p_.shrink_weight * g) / (tried_[base + k] + p_.shrink_weight);
    out[k] = static_cast<float>(std::clamp(c, 0.0, 1.0));
  }
}

void online_confidence::observe(int32_t slot, int32_t n_verified, int32_t n_accepted) {
  if (slot < 0 || slot >= p_.max_slots || n_verified < 0 || n_verified > p_.gamma_max || n_accepted < 0 ||
      n_accepted > n_verified)
    throw invalid_argument_error("online_confidence: observe(" + std::to_string(slot) + ", " +
                                 std::to_string(n_verified) + ", " + std::to_string(n_accepted) + ") out of range");
  const size_t base = static_cast<size_t>(slot) * static_cast<size_t>(p_.gamma_max);
  for (int32_t k = 0; k < p_.gamma_max; ++k) {
    const size_t i = base + static_cast<size_t>(k);
    acc_[i] *= p_.decay;
    tried_[i] *= p_.decay;
  }
  // The engine-wide counts decay on every round, verified or not: once the rate is low enough
  // that the scheduler verifies nothing, rounds without evidence pull it back toward the prior
  // (within ~1 / (1 - global_decay) request rounds), so verification resumes and the estimate
  // can recover. Without this a pessimistic estimate never sees the evidence to correct it.
  for (auto& v : g_acc_) v *= p_.global_decay;
  for (auto& v : g_tried_) v *= p_.global_decay;
  if (n_verified == 0) return;  // nothing verified: no evidence, only the decay
  const int32_t tried = std::min(n_accepted + 1, n_verified);
  for (int32_t k = 0; k < tried; ++k) {
    const double a = k < n_accepted ? 1.0 : 0.0;
    acc_[base + static_cast<size_t>(k)] += a;
    tried_[base + static_cast<size_t>(k)] += 1.0;
    g_acc_[static_cast<size_t>(k)] += a;
    g_tried_[static_cast<size_t>(k)] += 1.0;
  }
}

}  // namespace dspark

// Greedy and rejection-sampling verification of draft chains (CPU reference and CPU path).
#include "engine/spec/verify.h"

#include <string>

#include "common/error.h"
#include "kernels/cpu/ops.h"

namespace dspark {

int32_t argmax_index(std::span<const float> row) {
  // The kernels' argmax, the one plain greedy decoding uses (engine/sampler.h): the same
  // tie-breaking (lowest id) and NaN handling, so greedy verification cannot diverge from it.
  return static_cast<int32_t>(argmax(row.data(), static_cast<int64_t>(row.size())));
}

int32_t sample_index(std::span<const float> w, double u) {
  double total = 0.0;
  for (float x : w) total += x > 0.0f ? x : 0.0f;
  if (!(total > 0.0)) return -1;
  const double target = u * total;
  double acc = 0.0;
  int32_t last_positive = -1;
  for (size_t i = 0; i < w.size(); ++i) {
    if (!(w[i] > 0.0f)) continue;
    acc += w[i];
    last_positive = static_cast<int32_t>(i);
    if (acc > target) return last_positive;
  }
  return last_positive;  // rounding left target at the very end of the mass
}

verify_result verify_greedy(std::span<const int32_t> drafts, const float* rows, int64_t n_vocab) {
  if (n_vocab < 1) throw invalid_argument_error("verify_greedy: n_vocab must be >= 1");
  verify_result r;
  const size_t nv = static_cast<size_t>(n_vocab);
  for (size_t k = 0; k <= drafts.size(); ++k) {
    const int32_t best = argmax_index({rows + k * nv, nv});
    if (k == drafts.size() || drafts[k] != best) {
      r.n_accepted = static_cast<int32_t>(k);
      r.token = best;  // the correction at the first mismatch, or the bonus
      return r;
    }
  }
  return r;  // unreachable
}

verify_result verify_greedy(std::span<const int32_t> drafts, std::span<const int32_t> target_ids) {
  if (target_ids.size() != drafts.size() + 1)
    throw invalid_argument_error("verify_greedy: " + std::to_string(drafts.size()) + " drafts need " +
                                 std::to_string(drafts.size() + 1) + " target ids, got " +
                                 std::to_string(target_ids.size()));
  size_t k = 0;
  while (k < drafts.size() && drafts[k] == target_ids[k]) ++k;
  return {static_cast<int32_t>(k), target_ids[k]};  // the correction at the first mismatch, or the bonus
}

namespace {

// Residual weight max(p_t(v) - p_d(v), 0) summed, for a one-hot / sparse p_d whose support is
// `ids` (ascending) with `pd` beside them: equal to p_t outside the support.
double residual_mass_sparse(std::span<const float> p_t, std::span<const int32_t> ids,
                            std::span<const float> pd) {
  double mass = 0.0;
  for (float x : p_t) mass += x > 0.0f ? x : 0.0f;
  for (size_t j = 0; j < ids.size(); ++j) {
    const float t = p_t[static_cast<size_t>(ids[j])];
    const float tp = t > 0.0f ? t : 0.0f;
    const float r = t - pd[j] > 0.0f ? t - pd[j] : 0.0f;
    mass += static_cast<double>(r) - tp;
  }
  return mass;
}

// Inverse-CDF draw from max(p_t - p_d, 0) with p_d supported on ascending `ids`.
int32_t residual_draw_sparse(std::span<const float> p_t, std::span<const int32_t> ids,
                             std::span<const float> pd, double target) {
  double acc = 0.0;
  int32_t last = -1;
  size_t j = 0;
  for (size_t v = 0; v < p_t.size(); ++v) {
    float w = p_t[v];
    if (j < ids.size() && static_cast<size_t>(ids[j]) == v) w -= pd[j++];
    if (!(w > 0.0f)) continue;
    acc += w;
    last = static_cast<int32_t>(v);
    if (acc > target) return last;
  }
  return last;
}

}  // namespace

chain_step rejection_step(std::span<const float> p_t, const draft_dist& d, double u_accept,
                          double u_residual) {
  if (d.token < 0 || static_cast<size_t>(d.token) >= p_t.size())
    throw invalid_argument_error("rejection_step: draft token " + std::to_string(d.token) +
                                 " out of range [0, " + std::to_string(p_t.size()) + ")");
  const float pt_x = p_t[static_cast<size_t>(d.token)];
  const float pd_x = d.prob(d.token);
  // u * p_d < p_t  <=>  u < p_t / p_d without dividing: p_d == p_t always accepts (u < 1).
  if (static_cast<double>(pd_x) * u_accept < static_cast<double>(pt_x)) return {true, d.token};

  int32_t y = -1;
  if (d.kind == draft_dist_kind::dense) {
    double mass = 0.0;
    for (size_t v = 0; v < p_t.size(); ++v) {
      const float w = p_t[v] - d.probs[v];
      if (w > 0.0f) mass += w;
    }
    if (mass > 1e-12) {
      const double target = u_residual * mass;
      double acc = 0.0;
      for (size_t v = 0; v < p_t.size(); ++v) {
        const float w = p_t[v] - d.probs[v];
        if (!(w > 0.0f)) continue;
        acc += w;
        y = static_cast<int32_t>(v);
        if (acc > target) break;
      }
    }
  } else {
    const int32_t one_id[1] = {d.token};
    const float one_p[1] = {1.0f};
    std::span<const int32_t> ids = d.kind == draft_dist_kind::one_hot ? std::span<const int32_t>(one_id) : d.ids;
    std::span<const float> pd = d.kind == draft_dist_kind::one_hot ? std::span<const float>(one_p) : d.probs;
    const double mass = residual_mass_sparse(p_t, ids, pd);
    if (mass > 1e-12) y = residual_draw_sparse(p_t, ids, pd, u_residual * mass);
  }
  // No residual mass means p_t <= p_d everywhere, i.e. p_t == p_d up to rounding, where a
  // rejection has probability 0; p_t itself is then the exact fallback.
  if (y < 0) y = sample_index(p_t, u_residual);
  return {false, y};
}

verify_result verify_rejection(const draft_batch& drafts, int32_t slot, const float* probs,
                               int64_t n_vocab, const rng_key& key, int64_t position0) {
  if (n_vocab != drafts.params().n_vocab)
    throw invalid_argument_error("verify_rejection: n_vocab " + std::to_string(n_vocab) +
                                 " differs from the draft batch's " + std::to_string(drafts.params().n_vocab));
  const int32_t n = drafts.length(slot);
  const size_t nv = static_cast<size_t>(n_vocab);
  verify_result r;
  for (int32_t k = 0; k < n; ++k) {
    const uint64_t pos = static_cast<uint64_t>(position0 + k);
    const chain_step s = rejection_step({probs + static_cast<size_t>(k) * nv, nv}, drafts.dist(slot, k),
                                        key.uniform(pos, rng_purpose::accept),
                                        key.uniform(pos, rng_purpose::residual));
    if (!s.accepted) {
      r.n_accepted = k;
      r.token = s.token;
      return r;
    }
  }
  r.n_accepted = n;
  r.token = sample_index({probs + static_cast<size_t>(n) * nv, nv},
                         key.uniform(static_cast<uint64_t>(position0 + n), rng_purpose::bonus));
  if (r.token < 0) throw invalid_argument_error("verify_rejection: target row has no probability mass");
  return r;
}

}  // namespace dspark

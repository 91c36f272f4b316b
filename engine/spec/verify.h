// Verification of draft chains against the target: the one rule every drafter and backend
// shares (the CUDA path implements the same steps per row and is tested against this one).
//
// Greedy (temperature 0): accept drafts while draft k == argmax of target row k; the first
// mismatch is replaced by that argmax; if every draft matched, the bonus is the argmax of the
// row after the last draft. The committed tokens are then exactly what plain greedy decoding
// would have produced, because each one IS the target argmax given the committed prefix.
//
// Rejection sampling (temperature > 0), per position k with p_t = target row k, p_d = the
// distribution draft x_k was drawn from:
//   accept x_k  iff  u_k * p_d(x_k) < p_t(x_k)       (probability min(1, p_t(x)/p_d(x)))
//   on rejection     y ~ normalize(max(p_t - p_d, 0)), and the chain stops
//   all accepted     bonus ~ p_t of the row after the last draft
// Why lossless: P(output = v) = p_d(v) min(1, p_t(v)/p_d(v)) + P(reject) r(v)
//   = min(p_d(v), p_t(v)) + (1 - sum_w min(p_d(w), p_t(w))) max(p_t(v) - p_d(v), 0) / Z
//   = min(p_d, p_t)(v) + max(p_t - p_d, 0)(v) = p_t(v),   since Z = 1 - sum_w min(p_d, p_t)(w).
// By induction over positions the committed sequence has the target's joint distribution.
// top-k / top-p / min-p and temperature are applied to the target rows before they get here
// (the same distribution plain sampling draws from), so filtering stays exact too.
//
// Randomness: u_k and the residual / bonus draws come from counter_uniform keyed by the
// request's (seed, round) and the absolute position of the decided token, so results do not
// depend on batch composition or processing order.
//
// Row layout for one request verifying n drafts after anchor x0 at position P:
//   target rows  [n + 1][n_vocab]   row k = target's next-token prediction given x0, x_1..x_k,
//                                   i.e. the distribution for position P + 1 + k
//   drafts       [n]                x_1..x_n (draft_batch slot row)
#pragma once

#include <cstdint>
#include <span>

#include "engine/spec/counter_rng.h"
#include "engine/spec/draft_batch.h"

namespace dspark {

struct verify_result {
  int32_t n_accepted = 0;  // drafts accepted, [0, n_drafts]
  int32_t token = -1;      // correction (n_accepted < n_drafts) or bonus (n_accepted == n_drafts)
};

// Index of the largest value; ties go to the lowest index, NaNs are skipped (the kernels'
// argmax, which plain greedy decoding uses).
int32_t argmax_index(std::span<const float> row);

// Inverse-CDF draw from a non-negative, not necessarily normalised row with u in [0, 1).
// Returns -1 when the row has no positive entry.
int32_t sample_index(std::span<const float> weights, double u);

// Greedy verification. rows: [drafts.size() + 1][n_vocab] target logits (or any monotone
// transform of them, e.g. probabilities).
verify_result verify_greedy(std::span<const int32_t> drafts, const float* rows, int64_t n_vocab);

// Greedy verification from the target's argmax ids: target_ids[k] = argmax of target row k
// (the backend's row_outputs::argmax, engine/backend.h), [drafts.size() + 1]. The same rule
// as above without the rows. Throws invalid_argument_error on a size mismatch.
verify_result verify_greedy(std::span<const int32_t> drafts, std::span<const int32_t> target_ids);

// One position of rejection sampling: accept d.token with probability min(1, p_t/p_d) using
// u_accept; otherwise draw the correction from normalize(max(p_t - p_d, 0)) with u_residual
// (p_t itself when that residual has no mass, which only rounding can cause).
struct chain_step {
  bool accepted = false;
  int32_t token = -1;  // d.token when accepted, else the correction
};
chain_step rejection_step(std::span<const float> p_t, const draft_dist& d, double u_accept,
                          double u_residual);

// Rejection-sampling verification of slot's chain in `drafts`. probs: [n + 1][n_vocab] target
// probabilities (filtered, temperature-scaled, rows summing to 1), n = drafts.length(slot).
// position0: absolute position of x_1 (anchor position + 1), the RNG key's position base.
verify_result verify_rejection(const draft_batch& drafts, int32_t slot, const float* probs,
                               int64_t n_vocab, const rng_key& key, int64_t position0);

}  // namespace dspark

// Rejection sampling is lossless: the committed sequence has exactly the target's joint
// distribution, whatever the drafter proposes.
//
// Setup: a toy "target model" over a vocabulary of 4 whose next-token distribution is a fixed
// pseudo-random function of the prefix (some entries zero, as top-k filtering leaves them), and
// toy drafters of every distribution kind (dense, sparse top-2, deterministic one-hot, random
// tokens reported as one-hot, the target itself). Each sample runs full speculative rounds
// (draft gamma tokens, verify, commit accepted + correction/bonus) until 3 tokens are
// committed; 1e5 samples' first 3 tokens are chi-square tested against the exact product of the
// target's conditionals (64 cells). The test rejects at p < 1e-3. Seeds are fixed, so the
// outcome is deterministic; with these seeds every correct configuration passes.
//
// Negative controls: the same harness with a deliberately biased verifier (acceptance
// probability min(1, p_t/p_d)^0.5; resampling the correction from p_t instead of the residual)
// must be rejected by the same test at p < 1e-3, proving the test has the power to see a bias.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cmath>
#include <functional>
#include <vector>

#include "engine/spec/counter_rng.h"
#include "engine/spec/draft_batch.h"
#include "engine/spec/verify.h"
#include "stats.h"

namespace dspark {
namespace {

constexpr int kVocab = 4;
constexpr int kLen = 3;  // committed tokens whose joint distribution is tested
using dist4 = std::array<float, kVocab>;

// A pseudo-random distribution that depends only on (salt, prefix). With `holes`, about half of
// the prefixes get one token at probability 0 (as top-k / top-p filtering leaves them).
dist4 toy_dist(const std::vector<int32_t>& prefix, size_t n, uint64_t salt, bool holes) {
  uint64_t h = splitmix64_mix(salt);
  for (size_t i = 0; i < n; ++i) h = splitmix64_mix(h ^ static_cast<uint64_t>(prefix[i] + 1));
  dist4 d{};
  float sum = 0.0f;
  for (int v = 0; v < kVocab; ++v) {
    const double u = (static_cast<double>(splitmix64_mix(h + 17 * (v + 1)) >> 11) + 0.5) * 0x1.0p-53;
    d[v] = static_cast<float>(-std::log(u)) + 0.05f;  // Dirichlet(1)-like, floored
    sum += d[v];
  }
  if (holes && ((h >> 20) & 1)) {
    const int z = static_cast<int>((h >> 8) % kVocab);
    sum -= d[z];
    d[z] = 0.0f;
  }
  for (float& x : d) x /= sum;
  return d;
}

constexpr uint64_t kTargetSalt = 1001, kDraftSalt = 2002;

dist4 target_dist(const std::vector<int32_t>& prefix, size_t n) { return toy_dist(prefix, n, kTargetSalt, true); }

enum class draft_kind { dense, sparse_top2, one_hot_argmax, random_one_hot, target_itself };

// Draws draft k of a round into `out` (slot 0) given the prefix ctx[0..n).
void draw_draft(draft_kind kind, const std::vector<int32_t>& ctx, size_t n, const rng_key& key, draft_batch& out) {
  const double u = key.uniform(n, rng_purpose::draft);
  if (kind == draft_kind::random_one_hot) {
    out.push_one_hot(0, static_cast<int32_t>(u * kVocab));
    return;
  }
  dist4 q = kind == draft_kind::target_itself ? target_dist(ctx, n) : toy_dist(ctx, n, kDraftSalt, false);
  if (kind == draft_kind::one_hot_argmax) {
    out.push_one_hot(0, argmax_index(q));
    return;
  }
  if (kind == draft_kind::sparse_top2) {
    int a = argmax_index(q), b = a == 0 ? 1 : 0;
    for (int v = 0; v < kVocab; ++v)
      if (v != a && q[v] > q[b]) b = v;
    const float s = q[a] + q[b];
    const std::array<int32_t, 2> ids{a, b};
    const std::array<float, 2> p{q[a] / s, q[b] / s};
    const int32_t x = sample_index(p, u) == 0 ? a : b;
    out.push_sparse(0, x, ids, p);
    return;
  }
  const int32_t x = sample_index(q, u);
  std::span<float> row = out.next_dense_row(0);
  std::copy(q.begin(), q.end(), row.begin());
  out.push_dense(0, x);
}

using verifier_fn = std::function<verify_result(const draft_batch&, int32_t, const float*, int64_t,
                                                const rng_key&, int64_t)>;

struct experiment {
  std::vector<int64_t> counts = std::vector<int64_t>(64, 0);  // first kLen tokens, base-4 index
  int64_t drafts_verified = 0;
  int64_t drafts_accepted = 0;
};

// Runs n_samples independent generations with full speculative rounds of `gamma` drafts.
experiment run(draft_kind kind, int gamma, const verifier_fn& verify, int64_t n_samples, uint64_t seed_base) {
  experiment e;
  draft_batch drafts({.max_slots = 1, .gamma_max = gamma, .n_vocab = kVocab,
                      .kind = kind == draft_kind::sparse_top2 ? draft_dist_kind::sparse
                              : (kind == draft_kind::dense || kind == draft_kind::target_itself)
                                  ? draft_dist_kind::dense
                                  : draft_dist_kind::one_hot,
                      .max_sparse = 2});
  std::vector<int32_t> ctx;
  std::vector<float> probs(static_cast<size_t>((gamma + 1) * kVocab));
  for (int64_t s = 0; s < n_samples; ++s) {
    ctx.clear();
    rng_key key{seed_base + static_cast<uint64_t>(s), 0};
    while (ctx.size() < static_cast<size_t>(kLen)) {
      const size_t start = ctx.size();
      drafts.clear(0);
      for (int k = 0; k < gamma; ++k) {
        draw_draft(kind, ctx, start + k, key, drafts);
        ctx.push_back(drafts.tokens(0)[static_cast<size_t>(k)]);  // provisional, for later prefixes
      }
      for (int k = 0; k <= gamma; ++k) {
        const dist4 p = target_dist(ctx, start + k);
        std::copy(p.begin(), p.end(), probs.begin() + k * kVocab);
      }
      const verify_result r = verify(drafts, 0, probs.data(), kVocab, key, static_cast<int64_t>(start));
      ctx.resize(start + static_cast<size_t>(r.n_accepted));
      ctx.push_back(r.token);
      e.drafts_verified += gamma;
      e.drafts_accepted += r.n_accepted;
      ++key.round;
    }
    int idx = 0;
    for (int i = 0; i < kLen; ++i) idx = idx * kVocab + ctx[static_cast<size_t>(i)];
    ++e.counts[static_cast<size_t>(idx)];
  }
  return e;
}

// The exact target probability of every length-3 sequence.
std::vector<double> exact_joint() {
  std::vector<double> p(64);
  std::vector<int32_t> s(kLen);
  for (int idx = 0; idx < 64; ++idx) {
    s = {idx / 16, (idx / 4) % 4, idx % 4};
    double prob = 1.0;
    for (int i = 0; i < kLen; ++i) prob *= target_dist(s, static_cast<size_t>(i))[static_cast<size_t>(s[i])];
    p[static_cast<size_t>(idx)] = prob;
  }
  return p;
}

const verifier_fn kProduction = [](const draft_batch& d, int32_t slot, const float* probs, int64_t nv,
                                   const rng_key& key, int64_t pos0) {
  return verify_rejection(d, slot, probs, nv, key, pos0);
};

constexpr int64_t kSamples = 100000;
constexpr double kAlpha = 1e-3;

struct lossless_case {
  draft_kind kind;
  int gamma;
  const char* label;
};

class SpecRejection : public ::testing::TestWithParam<lossless_case> {};

TEST_P(SpecRejection, CommittedSequencesFollowTheTarget) {
  const lossless_case c = GetParam();
  const experiment e = run(c.kind, c.gamma, kProduction, kSamples, 7000 + 100 * c.gamma);
  const test::chi_square_result chi = test::chi_square_test(e.counts, exact_joint());
  EXPECT_GE(chi.p_value, kAlpha) << c.label << " gamma " << c.gamma << ": chi2 " << chi.stat << " dof "
                                 << chi.dof;
  std::printf("%s gamma %d: chi2 %.1f, dof %d, p %.3f, acceptance %.3f\n", c.label, c.gamma, chi.stat, chi.dof,
              chi.p_value, static_cast<double>(e.drafts_accepted) / static_cast<double>(e.drafts_verified));
  if (c.kind == draft_kind::target_itself) {
    EXPECT_EQ(e.drafts_accepted, e.drafts_verified);
  } else {
    EXPECT_LT(e.drafts_accepted, e.drafts_verified);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Kinds, SpecRejection,
    ::testing::Values(lossless_case{draft_kind::dense, 1, "dense"}, lossless_case{draft_kind::dense, 2, "dense"},
                      lossless_case{draft_kind::dense, 3, "dense"}, lossless_case{draft_kind::sparse_top2, 2, "sparse"},
                      lossless_case{draft_kind::sparse_top2, 3, "sparse"},
                      lossless_case{draft_kind::one_hot_argmax, 1, "one-hot argmax"},
                      lossless_case{draft_kind::one_hot_argmax, 3, "one-hot argmax"},
                      lossless_case{draft_kind::random_one_hot, 2, "garbage one-hot"},
                      lossless_case{draft_kind::target_itself, 3, "target itself"}));

// Negative control 1: acceptance probability min(1, p_t/p_d)^0.5 accepts too often.
verify_result biased_sqrt_accept(const draft_batch& d, int32_t slot, const float* probs, int64_t nv,
                                 const rng_key& key, int64_t pos0) {
  const int32_t n = d.length(slot);
  for (int32_t k = 0; k < n; ++k) {
    const std::span<const float> pt(probs + k * nv, static_cast<size_t>(nv));
    const draft_dist dd = d.dist(slot, k);
    const double ratio = std::min(1.0, pt[static_cast<size_t>(dd.token)] / static_cast<double>(dd.prob(dd.token)));
    if (key.uniform(static_cast<uint64_t>(pos0 + k), rng_purpose::accept) < std::sqrt(ratio)) continue;
    // The correct residual after the wrong test.
    const chain_step s = rejection_step(pt, dd, 2.0, key.uniform(static_cast<uint64_t>(pos0 + k), rng_purpose::residual));
    return {k, s.token};
  }
  return {n, sample_index({probs + n * nv, static_cast<size_t>(nv)},
                          key.uniform(static_cast<uint64_t>(pos0 + n), rng_purpose::bonus))};
}

// Negative control 2: the correction is drawn from p_t instead of max(p_t - p_d, 0).
verify_result biased_resample_target(const draft_batch& d, int32_t slot, const float* probs, int64_t nv,
                                     const rng_key& key, int64_t pos0) {
  const int32_t n = d.length(slot);
  for (int32_t k = 0; k < n; ++k) {
    const std::span<const float> pt(probs + k * nv, static_cast<size_t>(nv));
    const draft_dist dd = d.dist(slot, k);
    const uint64_t pos = static_cast<uint64_t>(pos0 + k);
    if (key.uniform(pos, rng_purpose::accept) * dd.prob(dd.token) < pt[static_cast<size_t>(dd.token)]) continue;
    return {k, sample_index(pt, key.uniform(pos, rng_purpose::residual))};
  }
  return {n, sample_index({probs + n * nv, static_cast<size_t>(nv)},
                          key.uniform(static_cast<uint64_t>(pos0 + n), rng_purpose::bonus))};
}

// Negative control 3: the residual max(p_t - p_d, 0) is sampled without renormalising it (the
// inverse-CDF target is u * 1 instead of u * residual mass; overshoot lands on the last token).
verify_result biased_unnormalised_residual(const draft_batch& d, int32_t slot, const float* probs, int64_t nv,
                                           const rng_key& key, int64_t pos0) {
  const int32_t n = d.length(slot);
  for (int32_t k = 0; k < n; ++k) {
    const std::span<const float> pt(probs + k * nv, static_cast<size_t>(nv));
    const draft_dist dd = d.dist(slot, k);
    const uint64_t pos = static_cast<uint64_t>(pos0 + k);
    if (key.uniform(pos, rng_purpose::accept) * dd.prob(dd.token) < pt[static_cast<size_t>(dd.token)]) continue;
    const double target = key.uniform(pos, rng_purpose::residual);
    double acc = 0.0;
    int32_t y = -1;
    for (int32_t v = 0; v < nv; ++v) {
      const double w = std::max(0.0, static_cast<double>(pt[static_cast<size_t>(v)]) - dd.prob(v));
      if (w <= 0.0) continue;
      y = v;
      acc += w;
      if (acc > target) break;
    }
    return {k, y};
  }
  return {n, sample_index({probs + n * nv, static_cast<size_t>(nv)},
                          key.uniform(static_cast<uint64_t>(pos0 + n), rng_purpose::bonus))};
}

TEST(SpecRejectionControl, UnnormalisedResidualIsDetected) {
  const experiment e = run(draft_kind::dense, 2, biased_unnormalised_residual, kSamples, 7200);
  const test::chi_square_result chi = test::chi_square_test(e.counts, exact_joint());
  EXPECT_LT(chi.p_value, kAlpha) << "chi2 " << chi.stat << " dof " << chi.dof;
  std::printf("negative control: chi2 %.1f, dof %d, p %.3g\n", chi.stat, chi.dof, chi.p_value);
}

TEST(SpecRejectionControl, SqrtAcceptanceIsDetected) {
  const experiment e = run(draft_kind::dense, 2, biased_sqrt_accept, kSamples, 7200);
  const test::chi_square_result chi = test::chi_square_test(e.counts, exact_joint());
  EXPECT_LT(chi.p_value, kAlpha) << "chi2 " << chi.stat << " dof " << chi.dof;
  std::printf("negative control: chi2 %.1f, dof %d, p %.3g\n", chi.stat, chi.dof, chi.p_value);
}

TEST(SpecRejectionControl, ResamplingFromTargetIsDetected) {
  const experiment e = run(draft_kind::one_hot_argmax, 2, biased_resample_target, kSamples, 7200);
  const test::chi_square_result chi = test::chi_square_test(e.counts, exact_joint());
  EXPECT_LT(chi.p_value, kAlpha) << "chi2 " << chi.stat << " dof " << chi.dof;
  std::printf("negative control: chi2 %.1f, dof %d, p %.3g\n", chi.stat, chi.dof, chi.p_value);
}

// The p-value routine against known chi-square quantiles.
TEST(SpecStats, ChiSquareSurvivalMatchesTables) {
  EXPECT_NEAR(test::chi_square_sf(3.841458820694124, 1), 0.05, 1e-9);
  EXPECT_NEAR(test::chi_square_sf(16.918977604620448, 9), 0.05, 1e-9);
  // Even dof 2m has the closed form exp(-x/2) sum_{i<m} (x/2)^i / i!.
  for (int m : {1, 2, 16, 32}) {
    for (double x : {2.0, 40.0, 64.0, 100.0}) {
      double term = 1.0, sum = 0.0;
      for (int i = 0; i < m; ++i) {
        sum += term;
        term *= (x / 2) / (i + 1);
      }
      const double want = std::exp(-x / 2) * sum;
      EXPECT_NEAR(test::chi_square_sf(x, 2 * m), want, 1e-10 * std::max(1.0, want)) << "dof " << 2 * m << " x " << x;
      EXPECT_NEAR(test::chi_square_sf(x, 2 * m) / want, 1.0, 1e-8) << "dof " << 2 * m << " x " << x;
    }
  }
}

}  // namespace
}  // namespace dspark

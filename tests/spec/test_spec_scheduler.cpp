// The confidence schedulers (issue 7): Algorithm 1 and the asynchronous capacity variant on
// hand-computed cases, and their losslessness under rejection sampling at temperature 1.
//
// Lossless setup (method doc 3.2, Appendix A): vocabulary {0, 1}; the target's next-token
// distribution is p_t = (0.7, 0.3) at every position; the drafter samples from p_d = (0.5, 0.5)
// and reports c_1 = 0.8 and c_2 = 1 if x_1 == 0 else 0 (a confidence that depends on the
// previous draft, as DSpark's does through W1[x_{k-1}]). Each sample runs one verify round
// with the scheduler's prefix and completes the first two committed tokens with plain draws
// from p_t; the 4-cell joint distribution of (y_1, y_2) must be p_t x p_t. With SPS =
// (1.0, 0.5, 0.45) a look-ahead search (no early stop) verifies both drafts exactly when
// x_1 = 0 and none otherwise, which makes P(y_1 = 0) = 0.5 * 0.7 + 0.5 * 1 = 0.85: the
// negative control must be rejected by the same test.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "common/error.h"
#include "engine/spec/async_capacity_policy.h"
#include "engine/spec/counter_rng.h"
#include "engine/spec/draft_batch.h"
#include "engine/spec/online_confidence.h"
#include "engine/spec/policy.h"
#include "engine/spec/timed_policy.h"
#include "engine/spec/verify.h"
#include "stats.h"

namespace dspark {
namespace {

// A flat SPS curve over B = 1..max_b (beyond a table, step time grows with B).
std::vector<double> flat_sps(int32_t max_b) { return std::vector<double>(static_cast<size_t>(max_b) + 1, 1.0); }

std::vector<int32_t> plan(spec_policy& p, const std::vector<std::vector<float>>& conf, int32_t max_verify = 16) {
  std::vector<policy_request> batch;
  for (size_t r = 0; r < conf.size(); ++r) batch.push_back({static_cast<int32_t>(r), conf[r], max_verify});
  std::vector<int32_t> n(conf.size(), -1);
  p.plan(batch, n);
  return n;
}

TEST(SpecScheduler, Algorithm1TiesGoToLowerRequestThenPrefix) {
  // Two identical requests (survivals 0.9, 0.81 each). Start: tau = 2, B = 2, theta = 2 * 1.0.
  // The first 0.9 (tie: request 0 first) gives 2.9 * 0.75 = 2.175 > 2: admitted; the second 0.9
  // gives 3.8 * 0.55 = 2.09 < 2.175: the early stop ends admission.
  confidence_scheduled_policy p(2, 2, {0.0, 1.0, 1.0, 0.75, 0.55});
  EXPECT_EQ(plan(p, {{0.9f, 0.9f}, {0.9f, 0.9f}}), (std::vector<int32_t>{1, 0}));
}

TEST(SpecScheduler, Algorithm1AllZeroConfidencesVerifyNothing) {
  confidence_scheduled_policy p(4, 3, flat_sps(15));
  EXPECT_EQ(plan(p, {{0.f, 0.f}, {0.f, 0.9f}, {}}), (std::vector<int32_t>{0, 0, 0}));
  async_capacity_policy q(4, 3, flat_sps(15));
  for (int step = 0; step < 4; ++step) EXPECT_EQ(plan(q, {{0.f, 0.f}, {0.f, 0.9f}, {}}), (std::vector<int32_t>{0, 0, 0}));
}

TEST(SpecScheduler, JaggedCurveTrapsEarlyStopButNotGlobalSearch) {
  // SPS with a dip at B = 2 (a tile boundary): R = 1, c = (0.9, 0.9, 0.9).
  //   B=1: 1.0 * 1.0 = 1.0;  B=2: 1.9 * 0.5 = 0.95 (dip);  B=3: 2.71 * 0.9 = 2.439;  B=4: 3.439 * 0.85 = 2.923
  // Algorithm 1 stops at the dip and verifies nothing; the global search finds B = 4 (3 drafts).
  const std::vector<double> sps = {0.0, 1.0, 0.5, 0.9, 0.85};
  confidence_scheduled_policy early(3, 1, sps);
  EXPECT_EQ(plan(early, {{0.9f, 0.9f, 0.9f}}), (std::vector<int32_t>{0}));
  async_capacity_policy async(3, 1, sps, /*lag=*/2);
  const std::vector<std::vector<float>> c = {{0.9f, 0.9f, 0.9f}};
  EXPECT_EQ(plan(async, c), (std::vector<int32_t>{0}));  // no history yet
  EXPECT_EQ(plan(async, c), (std::vector<int32_t>{0}));
  EXPECT_EQ(plan(async, c), (std::vector<int32_t>{3}));  // capacity from step 1's global optimum
  EXPECT_EQ(async.last_capacity(), 3);
}

TEST(SpecScheduler, MeasuredH200CurveTrapsAlgorithm1AtFourRequests) {
  // The verify-step profile bench_load measured on an H200 (Qwen3-8B shape, context 142,
  // 2026-12-07, docs/benchmarks.md ninth session), ms for B = 1..16: the hand GEMV's 5-8-token
  // steps cost 8.4 ms, cuBLASLt's 9-16-token steps 5.6 ms.
  const double ms[] = {5.140, 6.316, 6.050, 6.041, 8.394, 8.403, 8.412, 8.394,
                       5.581, 5.588, 5.571, 5.577, 5.577, 5.578, 5.582, 5.590};
  std::vector<double> sps = {0.0};
  for (double m : ms) sps.push_back(1e3 / m);
  // Four requests, every conditional confidence 0.6 (survivals 0.6, 0.36, 0.216), gamma 3.
  // Algorithm 1: theta(B = 4) = 4 / 6.041 ms = 0.662 per ms; the first draft makes B = 5,
  // 4.6 / 8.394 = 0.548: a drop, so the early stop admits nothing (what the sweep saw at C = 4).
  const std::vector<std::vector<float>> c(4, std::vector<float>{0.6f, 0.6f, 0.6f});
  confidence_scheduled_policy early(3, 4, sps);
  EXPECT_EQ(plan(early, c), (std::vector<int32_t>{0, 0, 0, 0}));
  // The global search reaches B = 16: tau 4 + 4 * (0.6 + 0.36 + 0.216) = 8.704 in 5.590 ms,
  // 1.557 per ms, 2.35x the plain step's rate; two steps later every request verifies 3 drafts.
  async_capacity_policy async(3, 4, sps, /*lag=*/2);
  plan(async, c);
  plan(async, c);
  EXPECT_EQ(plan(async, c), (std::vector<int32_t>{3, 3, 3, 3}));
  EXPECT_EQ(async.last_capacity(), 12);
}

TEST(SpecScheduler, CarriedPromptRowsMoveTheCurvePointDraftsArePricedAt) {
  // A step-time cliff after B = 8 (SPS 100 up to 8 rows, 25 beyond). Four requests, one draft
  // each at c = 0.9. Alone, B goes 4 -> 8 at no cost: every draft is admitted. With 4 prompt
  // rows riding in the forward (fused prefill) B starts at 8 and the first draft costs the
  // cliff: (4 + 0.9) * 25 < 4 * 100, so none is.
  std::vector<double> sps(17, 25.0);
  for (int b = 1; b <= 8; ++b) sps[static_cast<size_t>(b)] = 100.0;
  const std::vector<std::vector<float>> c = {{0.9f}, {0.9f}, {0.9f}, {0.9f}};
  confidence_scheduled_policy early(1, 4, sps);
  EXPECT_EQ(plan(early, c), (std::vector<int32_t>{1, 1, 1, 1}));
  early.set_carried_rows(4);
  EXPECT_EQ(plan(early, c), (std::vector<int32_t>{0, 0, 0, 0}));
  early.set_carried_rows(2);  // room for two drafts before the cliff
  EXPECT_EQ(plan(early, c), (std::vector<int32_t>{1, 1, 0, 0}));
  // The async search prices the same way: with 4 carried rows its optimum is no draft, so two
  // steps later the capacity is 0 even though that step carries nothing.
  async_capacity_policy async(1, 4, sps, /*lag=*/2);
  async.set_carried_rows(4);
  plan(async, c);
  async.set_carried_rows(0);
  plan(async, c);
  EXPECT_EQ(plan(async, c), (std::vector<int32_t>{0, 0, 0, 0}));
  EXPECT_EQ(plan(async, c), (std::vector<int32_t>{1, 1, 1, 1})) << "step 2's search carried nothing";
}

TEST(SpecScheduler, BothSearchesPriceDraftsAtTheBatchsRequestCount) {
  // Steps cost 1 ms a sequence plus 0.1 ms a token. The diagonal (one token a sequence, what
  // the profile measured before it had rows) makes every draft cost a new request's 1.1 ms;
  // the row at 2 sequences charges its 0.1 ms. Two requests, c = 0.5 each (survivals 0.5,
  // 0.25): with the rows every draft pays (B 2 -> 6: tau 3.5 in 2.6 ms against 2 in 2.2 ms),
  // with the diagonal none does (2.5 in 3.3 ms against 2 in 2.2).
  std::vector<double> diag(9), two(9);
  for (int b = 1; b <= 8; ++b) {
    diag[static_cast<size_t>(b)] = 1.0 / (1e-3 * b + 1e-4 * b);
    two[static_cast<size_t>(b)] = 1.0 / (1e-3 * std::min(b, 2) + 1e-4 * b);
  }
  const sps_table rows(std::vector<sps_table::row>{{2, two}, {4, diag}});
  const std::vector<std::vector<float>> c = {{0.5f, 0.5f}, {0.5f, 0.5f}};
  confidence_scheduled_policy early(2, 4, rows);
  EXPECT_EQ(plan(early, c), (std::vector<int32_t>{2, 2}));
  confidence_scheduled_policy early_diag(2, 4, diag);
  EXPECT_EQ(plan(early_diag, c), (std::vector<int32_t>{0, 0}));
  async_capacity_policy async(2, 4, rows, /*lag=*/2);
  async_capacity_policy async_diag(2, 4, diag, /*lag=*/2);
  for (int step = 0; step < 2; ++step) {
    plan(async, c);
    plan(async_diag, c);
  }
  EXPECT_EQ(plan(async, c), (std::vector<int32_t>{2, 2}));
  EXPECT_EQ(plan(async_diag, c), (std::vector<int32_t>{0, 0}));
}

TEST(SpecScheduler, AsyncCapacityIsStaleAndTopKIsFresh) {
  // Flat SPS: the global optimum admits every positive candidate. Step 1 has 2 requests with
  // 2 positive drafts each (capacity 4 for step 3, scaled to the step's request count).
  async_capacity_policy p(3, 4, flat_sps(16), /*lag=*/2);
  plan(p, {{0.9f, 0.9f, 0.0f}, {0.5f, 0.5f, 0.0f}});  // global optimum: 4 drafts over 2 requests
  plan(p, {{0.1f, 0.0f, 0.0f}, {0.1f, 0.0f, 0.0f}});  // global optimum: 2 drafts over 2 requests
  // Step 3: capacity 4 (from step 1); fresh survivals r0 (0.2, 0.2*0.5), r1 (0.9, 0.81, 0.729):
  // top 4 = 0.9, 0.81, 0.729 (r1) and 0.2 (r0).
  EXPECT_EQ(plan(p, {{0.2f, 0.5f, 0.5f}, {0.9f, 0.9f, 0.9f}}), (std::vector<int32_t>{1, 3}));
  // Step 4: capacity from step 2 (2 drafts per 2 requests), now 4 requests: 4 drafts.
  EXPECT_EQ(plan(p, {{1.f, 1.f, 1.f}, {1.f, 1.f, 1.f}, {0.5f}, {0.5f}}), (std::vector<int32_t>{3, 1, 0, 0}));
  EXPECT_EQ(p.last_capacity(), 4);
}

TEST(SpecScheduler, AsyncIsWarmOnceADraftingStepIsLagOld) {
  // The gate leaves out steps before this (spec_policy::warmed_up): capacity is 0 there.
  async_capacity_policy p(3, 4, flat_sps(16), /*lag=*/2);
  EXPECT_FALSE(p.warmed_up());
  plan(p, {{}, {}});                      // step 1: nobody drafts (prefilling)
  plan(p, {{0.9f, 0.9f, 0.0f}, {}});      // step 2: one request drafts
  EXPECT_EQ(plan(p, {{0.9f, 0.9f, 0.9f}, {}}), (std::vector<int32_t>{0, 0})) << "step 1 carried nothing";
  EXPECT_FALSE(p.warmed_up());
  EXPECT_EQ(plan(p, {{0.9f, 0.9f, 0.9f}, {}}), (std::vector<int32_t>{2, 0})) << "step 2's 2 drafts";
  EXPECT_TRUE(p.warmed_up());
  plan(p, {{}, {}});                      // nobody drafting later keeps the older ratio: still warm
  EXPECT_TRUE(p.warmed_up());
  // The wrappers and the other policies pass it on or are always warm.
  timed_policy t(std::make_unique<async_capacity_policy>(3, 4, flat_sps(16), 2));
  EXPECT_FALSE(t.warmed_up());
  EXPECT_TRUE(fixed_gamma_policy(3).warmed_up());
}

TEST(SpecScheduler, AsyncCapacityCountsDraftingRequestsAndSurvivesSkippedSteps) {
  // Flat SPS. Step 1: of 4 requests only 2 draft (2 positive drafts each): 2 drafts per drafting
  // request. Steps 2-3: nobody drafts (draft skipping). Step 3 reads step 1: 1 drafting
  // request now -> capacity 2. Step 4 reads step 2 (nobody drafted): step 1's ratio stands in.
  async_capacity_policy p(3, 4, flat_sps(16), /*lag=*/2);
  plan(p, {{0.9f, 0.9f, 0.0f}, {}, {0.5f, 0.5f, 0.0f}, {}});
  plan(p, {{}, {}, {}, {}});
  EXPECT_EQ(plan(p, {{}, {0.9f, 0.9f, 0.9f}, {}, {}}), (std::vector<int32_t>{0, 2, 0, 0}));
  EXPECT_EQ(p.last_capacity(), 2);
  EXPECT_EQ(plan(p, {{0.8f, 0.8f, 0.8f}, {}, {}, {0.9f, 0.9f, 0.9f}}), (std::vector<int32_t>{1, 0, 0, 3}));
  EXPECT_EQ(p.last_capacity(), 4) << "2 drafts per drafting request, 2 drafting";
}

TEST(SpecScheduler, OnlineConfidenceTracksConditionalAcceptance) {
  online_confidence oc({.max_slots = 2, .gamma_max = 3});
  std::vector<float> c(3);
  oc.fill(0, c);
  for (float v : c) EXPECT_FLOAT_EQ(v, 0.5f);  // the prior before any evidence
  // Slot 0 always accepts the first draft and rejects the second.
  for (int i = 0; i < 40; ++i) oc.observe(0, 3, 1);
  oc.fill(0, c);
  EXPECT_GT(c[0], 0.9f);
  EXPECT_LT(c[1], 0.1f);
  EXPECT_NEAR(c[2], 0.5f, 1e-6f);  // never tried: the global rate = the prior
  // A new request in slot 1 starts from the engine-wide rates.
  oc.reset(1);
  oc.fill(1, c);
  EXPECT_GT(c[0], 0.9f);
  EXPECT_LT(c[1], 0.15f);
  EXPECT_THROW(oc.observe(0, 2, 3), invalid_argument_error);
  EXPECT_THROW(online_confidence({.max_slots = 1, .gamma_max = 1, .prior = 1.0}), invalid_argument_error);
}

TEST(SpecScheduler, OnlineConfidenceRecoversWhenNothingIsVerified) {
  // Every first draft rejected: c_1 falls so low that a scheduler verifies nothing. Rounds
  // without evidence must pull it back toward the prior, or it would never be re-tested.
  online_confidence oc({.max_slots = 1, .gamma_max = 2, .global_decay = 0.99});
  std::vector<float> c(2);
  for (int i = 0; i < 60; ++i) oc.observe(0, 2, 0);
  oc.fill(0, c);
  const float low = c[0];
  EXPECT_LT(low, 0.05f);
  for (int i = 0; i < 500; ++i) oc.observe(0, 0, 0);
  oc.fill(0, c);
  // global rate = (0 + 2 * 0.5) / (45 * 0.99^500 + 2) = 0.43 (45 = the decayed tries of the 60 rounds)
  EXPECT_GT(c[0], 0.4f) << "stuck at " << low;
  EXPECT_LE(c[0], 0.5f);
}

// ---- losslessness at temperature 1 ----

constexpr std::array<float, 2> kTarget = {0.7f, 0.3f};
constexpr int64_t kSamples = 100000;

// How a test scheduler picks the verify length from the chain's confidences.
using chooser = std::function<int32_t(const std::vector<float>& conf)>;

// Joint counts of (y_1, y_2) over kSamples rounds, drafting with p_d = (0.5, 0.5).
std::vector<int64_t> run_rounds(const chooser& choose, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> u01(0.0, 1.0);
  draft_batch drafts({.max_slots = 1, .gamma_max = 2, .n_vocab = 2, .kind = draft_dist_kind::dense});
  const float probs[3][2] = {{kTarget[0], kTarget[1]}, {kTarget[0], kTarget[1]}, {kTarget[0], kTarget[1]}};
  std::vector<int64_t> counts(4, 0);
  for (int64_t s = 0; s < kSamples; ++s) {
    drafts.clear();
    const int32_t x1 = u01(rng) < 0.5 ? 0 : 1;
    const int32_t x2 = u01(rng) < 0.5 ? 0 : 1;
    const std::vector<float> conf = {0.8f, x1 == 0 ? 1.0f : 0.0f};
    for (int32_t x : {x1, x2}) {
      std::span<float> row = drafts.next_dense_row(0);
      row[0] = row[1] = 0.5f;
      drafts.push_dense(0, x);
    }
    drafts.truncate(0, choose(conf));
    const verify_result v = verify_rejection(drafts, 0, &probs[0][0], 2, rng_key{seed, static_cast<uint64_t>(s)}, 1);
    std::vector<int32_t> out(drafts.tokens(0).begin(), drafts.tokens(0).begin() + v.n_accepted);
    out.push_back(v.token);
    while (out.size() < 2) out.push_back(u01(rng) < kTarget[0] ? 0 : 1);  // the next round, no drafts
    ++counts[static_cast<size_t>(out[0] * 2 + out[1])];
  }
  return counts;
}

const std::vector<double> kProduct = {0.49, 0.21, 0.21, 0.09};

TEST(SpecSchedulerLossless, Algorithm1MatchesTargetAtTemperatureOne) {
  // SPS where Algorithm 1 always admits x_1 and admits x_2 exactly when c_2 > 0 (x_1 == 0).
  confidence_scheduled_policy p(2, 1, {0.0, 1.0, 1.0, 0.99});
  int64_t two = 0;
  const auto counts = run_rounds(
      [&](const std::vector<float>& c) {
        std::vector<int32_t> n(1);
        const policy_request req{0, c, 2};
        p.plan(std::span<const policy_request>(&req, 1), n);
        two += n[0] == 2;
        return n[0];
      },
      11);
  EXPECT_NEAR(static_cast<double>(two) / kSamples, 0.5, 0.01);  // the prefix really varied
  const auto r = test::chi_square_test(counts, kProduct);
  EXPECT_GT(r.p_value, 1e-3) << "chi2 " << r.stat << " dof " << r.dof;
}

TEST(SpecSchedulerLossless, AsyncCapacityMatchesTargetAtTemperatureOne) {
  async_capacity_policy p(2, 1, {0.0, 1.0, 1.0, 0.99}, /*lag=*/2);
  std::vector<int64_t> hist(3, 0);
  const auto counts = run_rounds(
      [&](const std::vector<float>& c) {
        std::vector<int32_t> n(1);
        const policy_request req{0, c, 2};
        p.plan(std::span<const policy_request>(&req, 1), n);
        ++hist[static_cast<size_t>(n[0])];
        return n[0];
      },
      12);
  EXPECT_GT(hist[1], kSamples / 10);  // capacity 1 and 2 both occurred: stale capacities vary
  EXPECT_GT(hist[2], kSamples / 10);
  const auto r = test::chi_square_test(counts, kProduct);
  EXPECT_GT(r.p_value, 1e-3) << "chi2 " << r.stat << " dof " << r.dof;
}

TEST(SpecSchedulerLossless, LookAheadSearchIsBiasedAsInAppendixA) {
  // Test-only look-ahead scheduler: the global optimum of tau * SPS(B) over prefixes of THIS
  // step's order, which lets a_2 (a function of x_1) decide whether x_1 is verified.
  const double sps[] = {0.0, 1.0, 0.5, 0.45};
  const auto counts = run_rounds(
      [&](const std::vector<float>& c) {
        double tau = 1.0, a = 1.0, best = sps[1];
        int32_t best_l = 0;
        for (int32_t l = 1; l <= 2; ++l) {
          a *= c[static_cast<size_t>(l - 1)];
          if (!(a > 0.0)) break;
          tau += a;
          if (tau * sps[l + 1] > best) best = tau * sps[l + 1], best_l = l;
        }
        return best_l;
      },
      13);
  const double p_first0 = static_cast<double>(counts[0] + counts[1]) / kSamples;
  EXPECT_NEAR(p_first0, 0.85, 0.01);  // Appendix A: 0.85 instead of 0.7
  const auto r = test::chi_square_test(counts, kProduct);
  EXPECT_LT(r.p_value, 1e-6) << "the biased scheduler was not detected";
}

}  // namespace
}  // namespace dspark

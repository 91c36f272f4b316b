// Metrics arithmetic, scheduling policies and the draft batch container, against hand-computed
// values.
#include <gtest/gtest.h>

#include <algorithm>
#include <vector>

#include "common/error.h"
#include "engine/spec/draft_batch.h"
#include "engine/spec/metrics.h"
#include "engine/spec/policy.h"

namespace dspark {
namespace {

TEST(SpecMetrics, HandComputedRounds) {
  spec_metrics m(4);
  // (proposed, verified, accepted, emitted next)
  m.record_round(4, 4, 4, true);   // all accepted + bonus: 5 tokens
  m.record_round(4, 4, 1, true);   // 1 accepted + correction: 2 tokens
  m.record_round(4, 2, 0, true);   // policy kept 2, none accepted: 1 token
  m.record_round(3, 3, 2, false);  // accepted a stop token at draft 1: 2 tokens, no bonus
  EXPECT_EQ(m.verify_steps(), 4);
  EXPECT_EQ(m.draft_tokens_proposed(), 15);
  EXPECT_EQ(m.draft_tokens_verified(), 13);
  EXPECT_EQ(m.draft_tokens_accepted(), 7);
  EXPECT_DOUBLE_EQ(m.acceptance_length(), 10.0 / 4.0);
  EXPECT_DOUBLE_EQ(m.acceptance_rate(), 7.0 / 13.0);
  // verified_at: k0 4 rounds, k1 4, k2 2 (rounds 1, 2... round 3 verified 2, round 4 verified 3) -> 3, k3 2
  EXPECT_EQ(m.verified_at(0), 4);
  EXPECT_EQ(m.verified_at(1), 4);
  EXPECT_EQ(m.verified_at(2), 3);
  EXPECT_EQ(m.verified_at(3), 2);
  // accepted_at: k0 rounds 1, 2, 4 -> 3; k1 rounds 1, 4 -> 2; k2 round 1; k3 round 1.
  EXPECT_EQ(m.accepted_at(0), 3);
  EXPECT_EQ(m.accepted_at(1), 2);
  EXPECT_EQ(m.accepted_at(2), 1);
  EXPECT_EQ(m.accepted_at(3), 1);
  // reached_at: k0 all 4; k1 rounds 1, 2, 4 (round 3 rejected k0) -> 3; k2 rounds 1, 4 -> 2; k3 round 1.
  EXPECT_EQ(m.reached_at(0), 4);
  EXPECT_EQ(m.reached_at(1), 3);
  EXPECT_EQ(m.reached_at(2), 2);
  EXPECT_EQ(m.reached_at(3), 1);
  EXPECT_DOUBLE_EQ(m.conditional_acceptance(1), 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(m.unconditional_acceptance(1), 2.0 / 4.0);
  EXPECT_DOUBLE_EQ(m.conditional_acceptance(2), 1.0 / 2.0);
}

TEST(SpecMetrics, TimingAndMerge) {
  spec_metrics a(2), b(3);
  a.record_request({.t_start = 1.0, .t_first_token = 1.5, .t_end = 3.5, .prompt_tokens = 10, .generated_tokens = 5});
  b.record_request({.t_start = 0.0, .t_first_token = 0.25, .t_end = 1.25, .prompt_tokens = 4, .generated_tokens = 3});
  b.record_round(3, 3, 3, true);
  a.merge(b);
  EXPECT_EQ(a.requests(), 2);
  EXPECT_EQ(a.positions(), 3);
  EXPECT_EQ(a.accepted_at(2), 1);
  EXPECT_DOUBLE_EQ(a.mean_ttft_s(), (0.5 + 0.25) / 2);
  EXPECT_DOUBLE_EQ(a.mean_tpot_s(), (2.0 / 4 + 1.0 / 2) / 2);
  EXPECT_DOUBLE_EQ(a.tokens_per_s(), 8.0 / (2.5 + 1.25));
  a.set_wall_seconds(2.0);
  EXPECT_DOUBLE_EQ(a.tokens_per_s(), 4.0);
  const nlohmann::json j = a.to_json();
  EXPECT_EQ(j["verify_steps"], 1);
  EXPECT_EQ(j["draft_tokens_accepted"], 3);
  EXPECT_DOUBLE_EQ(j["acceptance_length"].get<double>(), 4.0);
}

TEST(SpecMetrics, RejectsInconsistentRounds) {
  spec_metrics m(2);
  EXPECT_THROW(m.record_round(2, 3, 0, true), invalid_argument_error);  // verified > proposed
  EXPECT_THROW(m.record_round(2, 1, 2, true), invalid_argument_error);  // accepted > verified
  EXPECT_THROW(m.record_round(4, 3, 0, true), invalid_argument_error);  // verified > gamma_max
  EXPECT_EQ(m.verify_steps(), 0);
}

TEST(SpecPolicy, FixedGammaCapsAtProposedAndRoom) {
  fixed_gamma_policy p(3);
  const std::vector<float> c5(5, 1.0f), c2(2, 1.0f);
  const policy_request batch[] = {{0, c5, 100}, {1, c2, 100}, {2, c5, 1}, {3, {}, 100}};
  std::vector<int32_t> n(4, -1);
  p.plan(batch, n);
  EXPECT_EQ(n, (std::vector<int32_t>{3, 2, 1, 0}));
  EXPECT_EQ(p.draft_budget(), 3);
  EXPECT_THROW(fixed_gamma_policy(-1), invalid_argument_error);
  EXPECT_THROW(fixed_gamma_policy(257), invalid_argument_error);
}

TEST(SpecPolicy, ThresholdTruncatesAtCumulativeProduct) {
  threshold_policy p(4, 0.5f);
  // cumulative products: 0.9, 0.72, 0.504, 0.4536 -> keep 3
  const std::vector<float> c1 = {0.9f, 0.8f, 0.7f, 0.9f};
  // 0.4 already below: keep 0
  const std::vector<float> c2 = {0.4f, 1.0f};
  // all 1: keep min(4, proposed)
  const std::vector<float> c3(6, 1.0f);
  const policy_request batch[] = {{0, c1, 100}, {1, c2, 100}, {2, c3, 100}};
  std::vector<int32_t> n(3);
  p.plan(batch, n);
  EXPECT_EQ(n, (std::vector<int32_t>{3, 0, 4}));
  threshold_policy zero(4, 0.0f);  // threshold 0 = fixed gamma
  zero.plan(batch, n);
  EXPECT_EQ(n, (std::vector<int32_t>{4, 2, 4}));
  EXPECT_THROW(threshold_policy(4, 1.5f), invalid_argument_error);
  EXPECT_THROW(threshold_policy(0, 0.5f), invalid_argument_error);
}

TEST(SpecPolicy, ScheduledEarlyStopMatchesAppendixA) {
  // Method doc 3.2, Appendix A: R = 1, a_1 = 0.8, SPS(1, 2, 3) = (1.0, 0.5, 0.45). Admitting
  // draft 1 gives 1.8 * 0.5 = 0.9 < 1.0, so the early stop verifies nothing, however high a_2
  // is (a global search would admit both when a_2 > 0.42 and bias the output).
  confidence_scheduled_policy p(2, 1, {0.0, 1.0, 0.5, 0.45});
  const std::vector<float> c = {0.8f, 1.0f};
  const policy_request batch[] = {{0, c, 10}};
  std::vector<int32_t> n(1);
  p.plan(batch, n);
  EXPECT_EQ(n[0], 0);
}

TEST(SpecPolicy, ScheduledAdmitsByDescendingSurvival) {
  // Flat SPS: every admission with a > 0 raises tau * SPS, so all positive drafts are kept.
  confidence_scheduled_policy flat(3, 2, std::vector<double>(9, 1.0));  // B up to 2 * (3 + 1)
  const std::vector<float> c1 = {0.9f, 0.5f, 0.0f}, c2 = {0.6f, 0.6f, 0.6f};
  const policy_request batch[] = {{0, c1, 10}, {1, c2, 10}};
  std::vector<int32_t> n(2);
  flat.plan(batch, n);
  EXPECT_EQ(n, (std::vector<int32_t>{2, 3}));
  // SPS(B) = 1 / B (cost linear in tokens): theta = tau / B improves while a > tau / B.
  // Survivals: r0 (0.9, 0.45), r1 (0.6, 0.36, 0.216). Start tau = 2, B = 2, theta = 1.
  // Admit 0.9: 2.9 / 3 = 0.967 < 1 -> stop at once.
  confidence_scheduled_policy linear(3, 2, {0.0, 1.0, 0.5, 1.0 / 3, 0.25, 0.2, 1.0 / 6});
  linear.plan(batch, n);
  EXPECT_EQ(n, (std::vector<int32_t>{0, 0}));
  // SPS dropping slowly: (1, 1, 0.98, 0.95, 0.9, 0.5): admit 0.9 (2.9 * 0.98 = 2.842 > 2),
  // 0.6 (3.5 * 0.95 = 3.325), 0.45 (3.95 * 0.9 = 3.555), then 0.36 (4.31 * 0.5) stops.
  confidence_scheduled_policy slow(3, 2, {0.0, 1.0, 1.0, 0.98, 0.95, 0.9, 0.5});
  slow.plan(batch, n);
  EXPECT_EQ(n, (std::vector<int32_t>{2, 1}));
}

// The batch's request count picks the SPS row. Steps cost 1 ms a sequence plus 0.05 ms a
// token. Two requests with 8 tokens cost 2.4 ms, the one-token-a-sequence curve (the diagonal)
// says 8.4 ms. Survivals: r0 0.9, 0.81, 0.729; r1 0.8, 0.64, 0.512.
TEST(SpecPolicy, ScheduledPricesDraftsAtTheBatchsRequestCount) {
  auto ms = [](double seqs, double tokens) { return 1.0 / (1e-3 * seqs + 5e-5 * tokens); };
  std::vector<double> diag(9), two(9);
  for (int b = 1; b <= 8; ++b) {
    diag[b] = ms(b, b);
    two[b] = ms(std::min(b, 2), b);
  }
  const std::vector<float> c1 = {0.9f, 0.9f, 0.9f}, c2 = {0.8f, 0.8f, 0.8f};
  const policy_request batch[] = {{0, c1, 10}, {1, c2, 10}};
  std::vector<int32_t> n(2);
  // The rows: a draft costs its token (2.1 -> 2.15 ms for 0.9 of a token): every draft pays.
  confidence_scheduled_policy rows(3, 8, sps_table(std::vector<sps_table::row>{{2, two}, {8, diag}}));
  rows.plan(batch, n);
  EXPECT_EQ(n, (std::vector<int32_t>{3, 3}));
  // The diagonal alone prices the first draft as a third request (2.1 -> 3.15 ms for 0.9):
  // nothing is admitted.
  confidence_scheduled_policy diagonal(3, 8, diag);
  diagonal.plan(batch, n);
  EXPECT_EQ(n, (std::vector<int32_t>{0, 0}));
}

TEST(SpecDraftBatch, SparseIsSortedAndLookedUp) {
  draft_batch b({.max_slots = 2, .gamma_max = 2, .n_vocab = 10, .kind = draft_dist_kind::sparse, .max_sparse = 3});
  const int32_t ids[] = {7, 2, 5};
  const float p[] = {0.5f, 0.2f, 0.3f};
  b.push_sparse(1, 7, ids, p, 0.25f);
  const draft_dist d = b.dist(1, 0);
  EXPECT_EQ(d.ids[0], 2);
  EXPECT_EQ(d.ids[2], 7);
  EXPECT_FLOAT_EQ(d.prob(7), 0.5f);
  EXPECT_FLOAT_EQ(d.prob(5), 0.3f);
  EXPECT_FLOAT_EQ(d.prob(3), 0.0f);
  EXPECT_FLOAT_EQ(b.confidences(1)[0], 0.25f);
  b.push_one_hot(1, 4);
  EXPECT_FLOAT_EQ(b.dist(1, 1).prob(4), 1.0f);
  EXPECT_THROW(b.push_one_hot(1, 4), invalid_argument_error);  // gamma_max reached
  b.truncate(1, 1);
  EXPECT_EQ(b.length(1), 1);
  const int32_t dup[] = {3, 3};
  const float dp[] = {0.5f, 0.5f};
  EXPECT_THROW(b.push_sparse(0, 3, dup, dp), invalid_argument_error);
  EXPECT_THROW(b.push_one_hot(0, 10), invalid_argument_error);     // token out of range
  EXPECT_THROW(b.push_one_hot(0, 1, 1.5f), invalid_argument_error);  // confidence out of range
  EXPECT_THROW(b.push_one_hot(2, 1), invalid_argument_error);      // slot out of range
}

TEST(SpecDraftBatch, DenseRowsAndOneHotFill) {
  draft_batch b({.max_slots = 1, .gamma_max = 3, .n_vocab = 4, .kind = draft_dist_kind::dense});
  std::span<float> row = b.next_dense_row(0);
  row[0] = 0.25f;
  row[1] = 0.75f;
  row[2] = row[3] = 0.0f;
  b.push_dense(0, 1);
  b.push_one_hot(0, 3);
  EXPECT_FLOAT_EQ(b.dist(0, 0).prob(1), 0.75f);
  EXPECT_FLOAT_EQ(b.dist(0, 1).prob(3), 1.0f);
  EXPECT_FLOAT_EQ(b.dist(0, 1).prob(1), 0.0f);
  EXPECT_THROW(draft_batch({.max_slots = 0, .gamma_max = 3, .n_vocab = 4}), invalid_argument_error);
}

}  // namespace
}  // namespace dspark

// Greedy verification, table-driven (perfect match, early mismatch, all rejected, bonus), over
// the target rows and over their argmax ids (ties included), and the greedy loop with drafters
// good and bad reproducing plain greedy decoding exactly.
#include <gtest/gtest.h>

#include <cctype>
#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/spec/counter_rng.h"
#include "engine/spec/verify.h"

namespace dspark {
namespace {

constexpr int64_t kV = 8;

// Target rows [targets.size()][kV] whose argmax is targets[k] (a runner-up 0.5 below).
std::vector<float> rows_with_argmax(const std::vector<int32_t>& targets) {
  std::vector<float> rows(targets.size() * kV);
  for (size_t k = 0; k < targets.size(); ++k) {
    for (int64_t v = 0; v < kV; ++v) rows[k * kV + v] = static_cast<float>(v) * 0.01f;
    rows[k * kV + targets[k]] = 2.0f;
    rows[k * kV + (targets[k] + 1) % kV] = 1.5f;
  }
  return rows;
}

struct greedy_case {
  const char* label;
  std::vector<int32_t> drafts;
  std::vector<int32_t> target_argmax;  // [drafts + 1]
  int32_t want_accepted;
  int32_t want_token;
};

class SpecVerifyGreedy : public ::testing::TestWithParam<greedy_case> {};

TEST_P(SpecVerifyGreedy, Table) {
  const greedy_case& c = GetParam();
  const std::vector<float> rows = rows_with_argmax(c.target_argmax);
  const verify_result r = verify_greedy(c.drafts, rows.data(), kV);
  EXPECT_EQ(r.n_accepted, c.want_accepted) << c.label;
  EXPECT_EQ(r.token, c.want_token) << c.label;
  // The same decision from the ids alone (a backend's row_outputs::argmax).
  const verify_result by_id = verify_greedy(c.drafts, c.target_argmax);
  EXPECT_EQ(by_id.n_accepted, c.want_accepted) << c.label;
  EXPECT_EQ(by_id.token, c.want_token) << c.label;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, SpecVerifyGreedy,
    ::testing::Values(
        // every draft equals the target argmax: all accepted, bonus = argmax after the last
        greedy_case{"perfect match", {3, 1, 4}, {3, 1, 4, 5}, 3, 5},
        // first mismatch at draft 1: draft 0 kept, draft 1 replaced by the target's 6
        greedy_case{"early mismatch", {3, 1, 4}, {3, 6, 4, 5}, 1, 6},
        // draft 0 already wrong: nothing accepted, the correction is the target's 2
        greedy_case{"all rejected", {7, 7, 7}, {2, 7, 7, 7}, 0, 2},
        // a later draft that happens to match after a mismatch does not count
        greedy_case{"match after mismatch ignored", {3, 0, 4}, {3, 1, 4, 5}, 1, 1},
        // no drafts: plain decoding, the "bonus" is just the next token
        greedy_case{"no drafts", {}, {6}, 0, 6},
        greedy_case{"single draft accepted", {2}, {2, 0}, 1, 0}),
    [](const auto& info) {
      std::string s = info.param.label;
      for (char& ch : s)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return s;
    });

TEST(SpecVerifyGreedyTies, LowestIndexWins) {
  const std::vector<float> row = {0.1f, 0.7f, 0.7f, 0.2f};
  EXPECT_EQ(argmax_index(row), 1);
  const std::vector<int32_t> drafts = {2};
  std::vector<float> rows = {0.1f, 0.7f, 0.7f, 0.2f, 0.9f, 0.0f, 0.0f, 0.0f};
  const verify_result r = verify_greedy(drafts, rows.data(), 4);
  EXPECT_EQ(r.n_accepted, 0);
  EXPECT_EQ(r.token, 1);
}

// Rows with two equal maxima verified from their argmax ids: the ids are the lowest tied index
// (argmax_index), and the result equals verification over the rows themselves.
TEST(SpecVerifyGreedyTies, ArgmaxIdsOfTiedRowsVerifyLikeTheRows) {
  const std::vector<float> rows = {0.1f, 0.7f, 0.7f, 0.2f,   // tie 1 / 2 -> 1
                                   0.9f, 0.0f, 0.9f, 0.9f,   // tie 0 / 2 / 3 -> 0
                                   0.3f, 0.3f, 0.3f, 0.3f};  // all equal -> 0
  std::vector<int32_t> ids;
  for (size_t k = 0; k < 3; ++k) ids.push_back(argmax_index({rows.data() + k * 4, 4}));
  EXPECT_EQ(ids, (std::vector<int32_t>{1, 0, 0}));
  struct tie_case {
    std::vector<int32_t> drafts;
    int32_t want_accepted, want_token;
  };
  for (const tie_case& c : {tie_case{{1, 0}, 2, 0},     // the lowest tied ids: all accepted
                            tie_case{{2, 0}, 0, 1},     // the higher tied id of row 0 is rejected
                            tie_case{{1, 3}, 1, 0}}) {  // ... and of row 1
    const verify_result from_rows = verify_greedy(c.drafts, rows.data(), 4);
    const verify_result from_ids = verify_greedy(c.drafts, ids);
    EXPECT_EQ(from_rows.n_accepted, c.want_accepted);
    EXPECT_EQ(from_rows.token, c.want_token);
    EXPECT_EQ(from_ids.n_accepted, c.want_accepted);
    EXPECT_EQ(from_ids.token, c.want_token);
  }
}

TEST(SpecVerifyGreedyIds, MustBeOneMoreThanTheDrafts) {
  const std::vector<int32_t> drafts = {1, 2};
  EXPECT_THROW(verify_greedy(drafts, std::vector<int32_t>{1, 2}), invalid_argument_error);
  EXPECT_THROW(verify_greedy(drafts, std::vector<int32_t>{1, 2, 3, 4}), invalid_argument_error);
  EXPECT_THROW(verify_greedy({}, std::vector<int32_t>{}), invalid_argument_error);
}

// A deterministic toy target: logits are a hash of the whole prefix.
void toy_logits(const std::vector<int32_t>& prefix, size_t n, float* out) {
  uint64_t h = 12345;
  for (size_t i = 0; i < n; ++i) h = splitmix64_mix(h ^ static_cast<uint64_t>(prefix[i]));
  for (int64_t v = 0; v < kV; ++v) out[v] = static_cast<float>(splitmix64_mix(h + v) >> 40);
}

std::vector<int32_t> plain_greedy(std::vector<int32_t> ctx, size_t n_new) {
  std::vector<float> row(kV);
  const size_t want = ctx.size() + n_new;
  while (ctx.size() < want) {
    toy_logits(ctx, ctx.size(), row.data());
    ctx.push_back(argmax_index(row));
  }
  return ctx;
}

// The speculative greedy loop with a drafter callback; returns the context and acceptance.
std::vector<int32_t> spec_greedy(std::vector<int32_t> ctx, size_t n_new, int gamma,
                                 const std::function<int32_t(const std::vector<int32_t>&, int)>& draft,
                                 int64_t* accepted, int64_t* verified) {
  const size_t want = ctx.size() + n_new;
  std::vector<float> rows((gamma + 1) * kV);
  std::vector<int32_t> drafts;
  while (ctx.size() < want) {
    const size_t start = ctx.size();
    drafts.clear();
    std::vector<int32_t> ext = ctx;
    for (int k = 0; k < gamma; ++k) {
      drafts.push_back(draft(ext, k));
      ext.push_back(drafts.back());
    }
    for (int k = 0; k <= gamma; ++k) toy_logits(ext, start + k, rows.data() + k * kV);
    const verify_result r = verify_greedy(drafts, rows.data(), kV);
    ctx.insert(ctx.end(), drafts.begin(), drafts.begin() + r.n_accepted);
    ctx.push_back(r.token);
    *accepted += r.n_accepted;
    *verified += gamma;
  }
  ctx.resize(want);
  return ctx;
}

TEST(SpecVerifyGreedyLoop, GarbageDrafterStillYieldsPlainGreedyOutput) {
  const std::vector<int32_t> prompt = {1, 2, 3};
  const std::vector<int32_t> want = plain_greedy(prompt, 60);
  for (int gamma : {1, 3, 7}) {
    int64_t acc = 0, ver = 0;
    uint64_t state = 99;
    auto garbage = [&](const std::vector<int32_t>&, int) {
      state = splitmix64_mix(state);
      return static_cast<int32_t>(state % kV);
    };
    EXPECT_EQ(spec_greedy(prompt, 60, gamma, garbage, &acc, &ver), want) << "gamma " << gamma;
    EXPECT_LT(acc, ver);
  }
}

TEST(SpecVerifyGreedyLoop, OracleDrafterIsFullyAccepted) {
  const std::vector<int32_t> prompt = {4, 4};
  const std::vector<int32_t> want = plain_greedy(prompt, 50);
  int64_t acc = 0, ver = 0;
  auto oracle = [](const std::vector<int32_t>& ctx, int) {
    std::vector<float> row(kV);
    toy_logits(ctx, ctx.size(), row.data());
    return argmax_index(row);
  };
  EXPECT_EQ(spec_greedy(prompt, 50, 3, oracle, &acc, &ver), want);
  EXPECT_EQ(acc, ver);
}

TEST(SpecVerifyHelpers, SampleIndexInvertsTheCdf) {
  const std::vector<float> w = {0.0f, 1.0f, 0.0f, 3.0f};  // unnormalised: cdf 0.25 at index 1
  EXPECT_EQ(sample_index(w, 0.0), 1);
  EXPECT_EQ(sample_index(w, 0.2499), 1);
  EXPECT_EQ(sample_index(w, 0.25), 3);
  EXPECT_EQ(sample_index(w, 0.999999), 3);
  EXPECT_EQ(sample_index(std::vector<float>{0.0f, 0.0f}, 0.5), -1);
}

TEST(SpecVerifyHelpers, RejectionStepHandComputed) {
  // p_t = (0.5, 0.3, 0.2), one-hot draft on token 0: accept iff u < 0.5; the residual is
  // p_t without token 0, normalised: (0, 0.6, 0.4).
  const std::vector<float> pt = {0.5f, 0.3f, 0.2f};
  draft_dist d;
  d.token = 0;
  EXPECT_TRUE(rejection_step(pt, d, 0.49, 0.0).accepted);
  chain_step s = rejection_step(pt, d, 0.51, 0.59);
  EXPECT_FALSE(s.accepted);
  EXPECT_EQ(s.token, 1);
  EXPECT_EQ(rejection_step(pt, d, 0.51, 0.61).token, 2);
  // Dense p_d = (0.2, 0.7, 0.1), draft token 1: accept iff u < 0.3/0.7; residual
  // max(p_t - p_d, 0) = (0.3, 0, 0.1) -> (0.75, 0, 0.25).
  const std::vector<float> pd = {0.2f, 0.7f, 0.1f};
  draft_dist dd{draft_dist_kind::dense, 1, {}, pd};
  EXPECT_TRUE(rejection_step(pt, dd, 0.42, 0.0).accepted);
  s = rejection_step(pt, dd, 0.43, 0.74);
  EXPECT_FALSE(s.accepted);
  EXPECT_EQ(s.token, 0);
  EXPECT_EQ(rejection_step(pt, dd, 0.43, 0.76).token, 2);
}

TEST(SpecVerifyHelpers, CounterRngIsKeyedAndUniform) {
  const rng_key a{42, 3}, b{43, 3}, c{42, 4};
  EXPECT_EQ(a.uniform(10, rng_purpose::accept), a.uniform(10, rng_purpose::accept));
  EXPECT_NE(a.uniform(10, rng_purpose::accept), b.uniform(10, rng_purpose::accept));
  EXPECT_NE(a.uniform(10, rng_purpose::accept), c.uniform(10, rng_purpose::accept));
  EXPECT_NE(a.uniform(10, rng_purpose::accept), a.uniform(11, rng_purpose::accept));
  EXPECT_NE(a.uniform(10, rng_purpose::accept), a.uniform(10, rng_purpose::residual));
  // Mean and decile counts over 1e5 keys: mean within 5 sigma, each decile within 5 sigma.
  double sum = 0.0;
  std::vector<int> deciles(10, 0);
  const int n = 100000;
  for (int i = 0; i < n; ++i) {
    const double u = counter_uniform(7, 0, static_cast<uint64_t>(i), rng_purpose::draft);
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    ++deciles[static_cast<size_t>(u * 10)];
  }
  EXPECT_NEAR(sum / n, 0.5, 5 * std::sqrt(1.0 / 12 / n));
  for (int d : deciles) EXPECT_NEAR(d, n / 10, 5 * std::sqrt(n * 0.09));
}

}  // namespace
}  // namespace dspark

// timed_policy (engine/spec/timed_policy.h): it passes the inner policy's decision through
// unchanged and counts the verify budget, drafts per request and plan time of every step, with
// nearest-rank quantiles over its window; hand-computed cases.
#include <gtest/gtest.h>

#include "common/error.h"
#include "engine/spec/timed_policy.h"

namespace dspark {
namespace {

// Plans by a script: step i sleeps for nothing and returns the proposed lengths capped by cap.
TEST(TimedPolicy, CountsBudgetsAndPassesTheDecisionThrough) {
  timed_policy t(std::make_unique<fixed_gamma_policy>(2));
  EXPECT_EQ(t.name(), "fixed:2");
  EXPECT_EQ(t.draft_budget(), 2);
  const float c3[] = {0.9f, 0.8f, 0.7f}, c1[] = {0.5f};
  const policy_request batch[] = {{0, c3, 3}, {1, c1, 1}, {2, {}, 0}};
  int32_t n[3] = {-1, -1, -1};
  t.plan(batch, n);
  EXPECT_EQ(n[0], 2);  // min(3, gamma 2)
  EXPECT_EQ(n[1], 1);
  EXPECT_EQ(n[2], 0);
  // Step 1: budget = (2 + 1) + (1 + 1) + (0 + 1) = 6 tokens, 3 drafts over 3 requests.
  const policy_request one[] = {{0, c1, 1}};
  t.plan(one, std::span<int32_t>(n, 1));
  // Step 2: budget 2.
  const scheduler_stats& s = t.stats();
  EXPECT_EQ(s.plans, 2);
  EXPECT_EQ(s.request_rounds, 4);
  EXPECT_EQ(s.drafts_verified, 4);
  EXPECT_EQ(s.budget_sum, 8);
  EXPECT_EQ(s.budget_max, 6);
  EXPECT_DOUBLE_EQ(s.mean_budget(), 4.0);
  EXPECT_DOUBLE_EQ(s.mean_verify_length(), 1.0);
  EXPECT_GE(s.plan_seconds, 0.0);
  EXPECT_LE(t.plan_seconds_quantile(0.5), t.plan_seconds_quantile(1.0));
  EXPECT_GE(t.plan_seconds_quantile(0.99), 0.0);
}

TEST(TimedPolicy, EmptyWindowAndNullInner) {
  timed_policy t(std::make_unique<fixed_gamma_policy>(1));
  EXPECT_EQ(t.plan_seconds_quantile(0.99), 0.0);
  EXPECT_EQ(t.stats().mean_plan_seconds(), 0.0);
  EXPECT_THROW(timed_policy(nullptr), invalid_argument_error);
}

}  // namespace
}  // namespace dspark

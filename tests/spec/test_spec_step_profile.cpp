// Step-time profiling (engine/spec/step_profile.h) on the tiny CPU model: the measured grid,
// the dense SPS table, the JSON cache (reuse, key mismatch, corruption) and bad options.
// Timings themselves are not asserted (they belong to benchmarks), only their shape.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "common/error.h"
#include "engine/cpu_backend.h"
#include "engine/spec/policy_factory.h"
#include "engine/spec/step_profile.h"
#include "forwarding_backend.h"
#include "tiny_model.h"

namespace dspark {
namespace {

using test::tiny_model;

step_profile_options small_options() {
  step_profile_options o;
  o.max_tokens = 20;
  o.context_lengths = {8, 32};
  o.max_sequences = 4;
  o.repeats = 3;
  o.warmup = 1;
  return o;
}

TEST(SpecStepProfile, MeasuresTheGridAndInterpolatesATable) {
  tiny_model tm;
  cpu_backend be(tm.cfg, tm.w, tiny_model::options(4));
  const step_profile p = measure_step_profile(be, small_options(), "tiny");
  // Rows at 1, 2 and 4 sequences. Row S measures the diagonal (S', S] (one token a sequence)
  // and then B over S sequences up to S * tokens_per_sequence (8), the last row up to
  // max_tokens (20); below 16 sequences a row steps by one token.
  ASSERT_EQ(p.rows.size(), 3u);
  EXPECT_EQ(p.rows[0].sequences, 1);
  EXPECT_EQ(p.rows[0].batch_tokens, (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8}));
  EXPECT_EQ(p.rows[1].sequences, 2);
  std::vector<int32_t> expect;
  for (int32_t b = 2; b <= 16; ++b) expect.push_back(b);
  EXPECT_EQ(p.rows[1].batch_tokens, expect);
  EXPECT_EQ(p.rows[2].sequences, 4);
  expect.clear();
  for (int32_t b = 3; b <= 20; ++b) expect.push_back(b);
  EXPECT_EQ(p.rows[2].batch_tokens, expect);
  EXPECT_EQ(step_profile_grid(small_options(), 4).size(), 3u);
  for (const auto& r : p.rows) {
    ASSERT_EQ(r.step_s.size(), 2u);
    for (const auto& t : r.step_s) {
      ASSERT_EQ(t.size(), r.batch_tokens.size());
      for (double s : t) EXPECT_GT(s, 0.0);
    }
  }
  const sps_table t = p.table(30);  // nearest context: 32
  ASSERT_EQ(t.rows().size(), 3u);
  EXPECT_EQ(t.max_b(), 20);
  const auto& r4 = p.rows[2].step_s[1];  // 4 sequences, context 32: B = 3..20
  // Row 4 at B = 16 is its own point (index 13); at B = 2 it is the diagonal measured by row 2.
  EXPECT_DOUBLE_EQ(t.at(4, 16), 1.0 / r4[13]);
  EXPECT_DOUBLE_EQ(t.at(2, 2), 1.0 / p.rows[1].step_s[1][0]);
  EXPECT_DOUBLE_EQ(t.at(2), t.at(2, 2));
  // Between rows: 3 requests with 12 tokens lie halfway between the 2- and 4-sequence rows.
  const double s2 = p.rows[1].step_s[1][10], s4 = r4[9];  // B = 12 in both rows
  EXPECT_NEAR(1.0 / t.at(3, 12), 0.5 * (s2 + s4), 1e-12);
  // Beyond a row the last step time grows in proportion to B (the compute-bound end).
  EXPECT_DOUBLE_EQ(t.at(4, 500), t.at(4, 20) * 20.0 / 500.0);
  EXPECT_DOUBLE_EQ(t.at(1, 80), 1.0 / p.rows[0].step_s[1][7] * 8.0 / 80.0);
  EXPECT_DOUBLE_EQ(t.at(0), t.at(1));
  // More requests than the last row read the last row.
  EXPECT_DOUBLE_EQ(t.at(9, 20), t.at(4, 20));
  // The profile leaves every sequence slot free again.
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(be.open_sequence().has_value());
}

// The rows see what a step's sequences cost beside its tokens: on a backend whose steps take
// 3 ms per sequence (as KV reads grow with the sequences; on its own simulated clock, so the
// machine's load does not enter), 16 tokens over 4 sequences cost about
// four times 16 tokens over 1, and 4 requests of 4 tokens cost what 4 requests of 1 cost,
// where a one-token-a-sequence curve would price them as 16 requests.
TEST(SpecStepProfile, RowsPriceTheSequencesAStepCarries) {
  tiny_model tm;
  cpu_backend inner(tm.cfg, tm.w, tiny_model::options(16));
  struct per_sequence_cost final : test::forwarding_backend {
    using forwarding_backend::forwarding_backend;
    forward_output forward(const forward_batch& b) override {
      if (!b.seqs.empty() && b.seqs[0].n_logits > 0)  // timed steps (the prefill has no logits)
        clock_s += 3e-3 * static_cast<double>(b.seqs.size());
      return forwarding_backend::forward(b);
    }
    double clock_s = 0.0;
  } be(inner);
  step_profile_options o;
  o.max_tokens = 16;
  o.max_sequences = 16;
  o.tokens_per_sequence = 4;
  o.context_lengths = {8};
  o.repeats = 1;
  o.warmup = 0;
  o.now = [&be] { return be.clock_s; };
  const sps_table t = measure_step_profile(be, o, "per-sequence").table(8);
  const double one = 1.0 / t.at(1, 4), four = 1.0 / t.at(4, 16), sixteen = 1.0 / t.at(16);
  EXPECT_GT(four, 2.0 * one);      // 12 ms against 3 ms
  EXPECT_GT(sixteen, 2.0 * four);  // 48 ms against 12 ms
  EXPECT_LT(four, 0.5 * sixteen);
}

// The policies built by name get the rows (1, 2 and 4 sequences at 4 slots); with
// DSPARK_SPS_ONE_CURVE=1 they get the last row alone, the one-curve pricing kept for A/B runs.
TEST(SpecStepProfile, PoliciesByNameGetTheRowsOrOneCurveForAB) {
  tiny_model tm;
  cpu_backend be(tm.cfg, tm.w, tiny_model::options(4));
  policy_build_options o;
  o.gamma = 3;
  o.max_slots = 4;
  o.target = &be;
  o.device = "test";
  o.profile_path = ::testing::TempDir() + "dspark_step_profile_factory.json";
  std::remove(o.profile_path.c_str());
  for (const char* name : {"scheduled", "async"}) {
    SCOPED_TRACE(name);
    ::unsetenv("DSPARK_SPS_ONE_CURVE");
    const std::unique_ptr<spec_policy> rows = make_policy_by_name(name, tm.cfg, o);
    ASSERT_NE(rows->step_curve(), nullptr);
    ASSERT_EQ(rows->step_curve()->rows().size(), 3u);
    ::setenv("DSPARK_SPS_ONE_CURVE", "1", 1);
    const std::unique_ptr<spec_policy> one = make_policy_by_name(name, tm.cfg, o);
    ::unsetenv("DSPARK_SPS_ONE_CURVE");
    ASSERT_EQ(one->step_curve()->rows().size(), 1u);
    EXPECT_EQ(one->step_curve()->rows()[0].sequences, 4);
    // The one curve prices 2 requests with 8 tokens as the last row's 8 tokens over 4.
    EXPECT_DOUBLE_EQ(one->step_curve()->at(2, 8), rows->step_curve()->at(4, 8));
  }
  std::remove(o.profile_path.c_str());
}

// The table between rows, on hand-made curves: the step time is linear in R, and a step of B
// tokens below the upper row's count interpolates towards B sequences (the upper row's
// diagonal there), not towards the upper row's count.
TEST(SpecStepProfile, TableInterpolatesBetweenSequenceRows) {
  // Row 2: 10 ms a step at every B. Row 8: 10 ms for B <= 2 (its copy of the diagonal),
  // 20 ms beyond.
  std::vector<double> two(33, 100.0), eight(33, 50.0);
  eight[1] = eight[2] = 100.0;
  const sps_table t(std::vector<sps_table::row>{{2, two}, {8, eight}});
  EXPECT_DOUBLE_EQ(t.at(2, 16), 100.0);
  EXPECT_DOUBLE_EQ(t.at(8, 16), 50.0);
  EXPECT_NEAR(1.0 / t.at(5, 16), 0.015, 1e-12);  // halfway between 2 and 8 sequences
  // 4 tokens over 4 sequences: row 8 ran them over 4 too, so R = 4 reads row 8 alone.
  EXPECT_DOUBLE_EQ(t.at(4, 4), 50.0);
  EXPECT_DOUBLE_EQ(t.at(4), 50.0);
  // 3 requests with 4 tokens: halfway between 2 sequences and 4.
  EXPECT_NEAR(1.0 / t.at(3, 4), 0.015, 1e-12);
  EXPECT_THROW(sps_table(std::vector<sps_table::row>{}), invalid_argument_error);
  EXPECT_THROW(sps_table(std::vector<sps_table::row>{{2, two}, {2, eight}}), invalid_argument_error);
  EXPECT_THROW(sps_table(std::vector<sps_table::row>{{0, two}}), invalid_argument_error);
}

TEST(SpecStepProfile, CacheIsReusedOnlyForTheSameKeyAndGrid) {
  tiny_model tm;
  cpu_backend be(tm.cfg, tm.w, tiny_model::options(4));
  const std::string path = ::testing::TempDir() + "dspark_step_profile.json";
  std::remove(path.c_str());
  const step_profile a = load_or_measure_step_profile(be, small_options(), "key-a", path);
  const step_profile b = load_or_measure_step_profile(be, small_options(), "key-a", path);
  EXPECT_EQ(a.rows.back().step_s, b.rows.back().step_s);  // read back, not re-measured (timings never repeat)
  const step_profile c = load_or_measure_step_profile(be, small_options(), "key-b", path);
  EXPECT_EQ(c.key, "key-b");
  EXPECT_NE(c.rows.back().step_s, a.rows.back().step_s);
  // A profile measured for other rows is not reused either.
  step_profile_options wide = small_options();
  wide.tokens_per_sequence = 4;
  const step_profile e = load_or_measure_step_profile(be, wide, "key-b", path);
  EXPECT_EQ(e.rows[0].batch_tokens, (std::vector<int32_t>{1, 2, 3, 4}));
  { std::ofstream(path) << "{\"format\": \"dspark-step-profile\", \"version\": 2, \"key\": \"key-b\""; }
  const step_profile d = load_or_measure_step_profile(be, small_options(), "key-b", path);  // corrupt: re-measured
  ASSERT_EQ(d.rows.size(), a.rows.size());
  EXPECT_EQ(d.rows.back().batch_tokens, a.rows.back().batch_tokens);
  std::remove(path.c_str());
}

// A B-token step spreads over the sequences, so a context only needs room for ceil(B / S) more
// tokens per sequence in each row (a short-context deployment with many slots can still be
// profiled): here tokens_per_sequence (8) in rows 1 and 2, ceil(20 / 4) = 5 in row 4.
TEST(SpecStepProfile, ContextNeedsRoomForOneSequencesShareOfTheStep) {
  tiny_model tm;
  cpu_backend be(tm.cfg, tm.w, tiny_model::options(4));
  step_profile_options o = small_options();
  o.context_lengths = {56};  // 56 + 8 = 64 <= n_ctx 64 (56 + 20 would not fit)
  o.repeats = 1;
  const step_profile p = measure_step_profile(be, o, "short");
  EXPECT_EQ(p.context_lengths, std::vector<int32_t>{56});
  o.context_lengths = {57};  // 57 + 8 > 64
  EXPECT_THROW(measure_step_profile(be, o, "short"), invalid_argument_error);
}

TEST(SpecStepProfile, RejectsBadOptionsAndMalformedFiles) {
  tiny_model tm;
  cpu_backend be(tm.cfg, tm.w, tiny_model::options(2));
  step_profile_options o = small_options();
  o.context_lengths = {};
  EXPECT_THROW(measure_step_profile(be, o, "k"), invalid_argument_error);
  o = small_options();
  o.context_lengths = {250};  // + 20 exceeds the tiny model's context
  EXPECT_THROW(measure_step_profile(be, o, "k"), invalid_argument_error);
  EXPECT_THROW(step_profile::from_json("not json"), invalid_argument_error);
  EXPECT_NO_THROW(step_profile::from_json(R"({"format":"dspark-step-profile","version":2,"key":"k",
      "context_lengths":[8],"rows":[{"sequences":1,"batch_tokens":[1,2],"step_s":[[1e-3,1e-3]]},
      {"sequences":2,"batch_tokens":[2,3],"step_s":[[1e-3,1e-3]]}]})"));
  // Version 1 (one curve, before the rows) is re-measured, not misread.
  EXPECT_THROW(step_profile::from_json(R"({"format":"dspark-step-profile","version":1,"key":"k",
      "context_lengths":[8],"batch_tokens":[1],"step_s":[[1e-3]]})"),
               invalid_argument_error);
  EXPECT_THROW(step_profile::from_json(R"({"format":"dspark-step-profile","version":2,"key":"k",
      "context_lengths":[8],"rows":[{"sequences":1,"batch_tokens":[2,1],"step_s":[[1e-3,1e-3]]}]})"),
               invalid_argument_error);
  EXPECT_THROW(step_profile::from_json(R"({"format":"dspark-step-profile","version":2,"key":"k",
      "context_lengths":[8],"rows":[{"sequences":1,"batch_tokens":[1],"step_s":[[-1]]}]})"),
               invalid_argument_error);
  // A row must continue past the diagonal of the rows before it.
  EXPECT_THROW(step_profile::from_json(R"({"format":"dspark-step-profile","version":2,"key":"k",
      "context_lengths":[8],"rows":[{"sequences":2,"batch_tokens":[1,2],"step_s":[[1e-3,1e-3]]},
      {"sequences":4,"batch_tokens":[2,3],"step_s":[[1e-3,1e-3]]}]})"),
               invalid_argument_error);
  EXPECT_THROW(step_profile::from_json(R"({"format":"dspark-step-profile","version":2,"key":"k",
      "context_lengths":[8],"rows":[{"sequences":2,"batch_tokens":[1],"step_s":[[1e-3]]},
      {"sequences":1,"batch_tokens":[3],"step_s":[[1e-3]]}]})"),
               invalid_argument_error);
  o = small_options();
  o.tokens_per_sequence = 0;
  EXPECT_THROW(measure_step_profile(be, o, "k"), invalid_argument_error);
  EXPECT_THROW(sps_table(std::vector<double>{0.0}), invalid_argument_error);
}

}  // namespace
}  // namespace dspark

// Step-time profiling (engine/spec/step_profile.h) on the tiny CPU model: the measured grid,
// the dense SPS table, the JSON cache (reuse, key mismatch, corruption) and bad options.
// Timings themselves are not asserted (they belong to benchmarks), only their shape.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "common/error.h"
#include "engine/cpu_backend.h"
#include "engine/spec/step_profile.h"
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
  // Every B up to 16, then 24, 32, ... capped by max_tokens (20 is appended).
  std::vector<int32_t> expect;
  for (int32_t b = 1; b <= 16; ++b) expect.push_back(b);
  expect.push_back(20);
  EXPECT_EQ(p.batch_tokens, expect);
  ASSERT_EQ(p.step_s.size(), 2u);
  for (const auto& row : p.step_s)
    for (double s : row) EXPECT_GT(s, 0.0);
  const sps_table t = p.table(30);  // nearest context: 32
  EXPECT_EQ(t.max_b(), 20);
  EXPECT_DOUBLE_EQ(t.at(16), 1.0 / p.step_s[1][15]);
  // B = 18 lies halfway between the measured 16 and 20.
  EXPECT_NEAR(1.0 / t.at(18), 0.5 * (p.step_s[1][15] + p.step_s[1][16]), 1e-12);
  // Beyond the table the last step time grows in proportion to B (the compute-bound end).
  EXPECT_DOUBLE_EQ(t.at(500), t.at(20) * 20.0 / 500.0);
  EXPECT_DOUBLE_EQ(t.at(0), t.at(1));
  // The profile leaves every sequence slot free again.
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(be.open_sequence().has_value());
}

TEST(SpecStepProfile, CacheIsReusedOnlyForTheSameKeyAndGrid) {
  tiny_model tm;
  cpu_backend be(tm.cfg, tm.w, tiny_model::options(4));
  const std::string path = ::testing::TempDir() + "dspark_step_profile.json";
  std::remove(path.c_str());
  const step_profile a = load_or_measure_step_profile(be, small_options(), "key-a", path);
  const step_profile b = load_or_measure_step_profile(be, small_options(), "key-a", path);
  EXPECT_EQ(a.step_s, b.step_s);  // read back, not re-measured (timings never repeat exactly)
  const step_profile c = load_or_measure_step_profile(be, small_options(), "key-b", path);
  EXPECT_EQ(c.key, "key-b");
  EXPECT_NE(c.step_s, a.step_s);
  { std::ofstream(path) << "{\"format\": \"dspark-step-profile\", \"version\": 1, \"key\": \"key-b\""; }
  const step_profile d = load_or_measure_step_profile(be, small_options(), "key-b", path);  // corrupt: re-measured
  EXPECT_EQ(d.batch_tokens, a.batch_tokens);
  std::remove(path.c_str());
}

// A B-token step spreads over the sequences, so a context only needs room for ceil(B / seqs)
// more tokens per sequence (a short-context deployment with many slots can still be profiled).
TEST(SpecStepProfile, ContextNeedsRoomForOneSequencesShareOfTheStep) {
  tiny_model tm;
  cpu_backend be(tm.cfg, tm.w, tiny_model::options(4));
  step_profile_options o = small_options();
  o.context_lengths = {58};  // 58 + ceil(20 / 4) = 63 <= n_ctx 64 (58 + 20 would not fit)
  o.repeats = 1;
  const step_profile p = measure_step_profile(be, o, "short");
  EXPECT_EQ(p.context_lengths, std::vector<int32_t>{58});
  o.context_lengths = {60};  // 60 + 5 > 64
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
  EXPECT_THROW(step_profile::from_json(R"({"format":"dspark-step-profile","version":1,"key":"k",
      "context_lengths":[8],"batch_tokens":[2,1],"step_s":[[1e-3,1e-3]]})"),
               invalid_argument_error);
  EXPECT_THROW(step_profile::from_json(R"({"format":"dspark-step-profile","version":1,"key":"k",
      "context_lengths":[8],"batch_tokens":[1],"step_s":[[-1]]})"),
               invalid_argument_error);
  EXPECT_THROW(sps_table({0.0}), invalid_argument_error);
}

}  // namespace
}  // namespace dspark

// Difficulty-aware draft skipping (models/drafters/draft_skip_rule.h, skipping_drafter.h):
//   - the rule against hand-computed cases: EMA updates, the E > draft_cost threshold with and
//     without a confidence head, warm-up, the re-probe schedule with its doubling backoff;
//   - the decorator's contract: skipped requests never reach the inner propose, every
//     begin/on_commit/rollback/end does, and the counters add up;
//   - losslessness: at temperature 0 the output equals plain decoding, on the tiny model with
//     the n-gram drafter and on the default model with a random trained DSpark drafter (which
//     has a confidence head), with skipping that really skips.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <thread>

#include "common/error.h"
#include "engine/cpu_backend.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "engine/spec/draft_batch.h"
#include "engine/spec/policy.h"
#include "engine/spec/prompt_set.h"
#include "engine/spec/spec_decoder.h"
#include "models/drafters/draft_cost_meter.h"
#include "models/drafters/ngram_drafter.h"
#include "models/drafters/skipping_drafter.h"
#include "models/drafters/trained_drafter.h"
#include "tests/drafters/drafter_fixture.h"
#include "tests/spec/tiny_model.h"
#include "tests/test_support.h"

namespace dspark {
namespace {

using D = draft_skip_decision;

TEST(DraftSkipRule, EmaThresholdAndProbeScheduleByHand) {
  draft_skip_rule rule({.draft_cost = 0.5, .ema_alpha = 0.5, .warmup_rounds = 2, .probe_interval = 2,
                        .max_probe_interval = 4});
  draft_skip_state s;
  EXPECT_EQ(rule.decide(s), D::draft);  // warm-up
  rule.observe(s, 3, -1);
  EXPECT_DOUBLE_EQ(s.ema, 3.0);  // first round: its own value
  EXPECT_EQ(rule.decide(s), D::draft);  // warm-up
  rule.observe(s, 0, -1);
  EXPECT_DOUBLE_EQ(s.ema, 1.5);  // 3 + 0.5 * (0 - 3)
  EXPECT_EQ(rule.decide(s), D::draft);  // 1.5 > 0.5
  rule.observe(s, 0, -1);
  EXPECT_DOUBLE_EQ(s.ema, 0.75);
  EXPECT_EQ(rule.decide(s), D::draft);  // 0.75 > 0.5
  rule.observe(s, 0, -1);
  EXPECT_DOUBLE_EQ(s.ema, 0.375);
  // 0.375 <= 0.5: two skips, a probe, then four skips (interval doubled), a probe, and the cap
  // keeps the interval at 4.
  const D want[] = {D::skip, D::skip, D::probe, D::skip, D::skip, D::skip, D::skip, D::probe,
                    D::skip, D::skip, D::skip, D::skip, D::probe};
  for (size_t i = 0; i < std::size(want); ++i) {
    EXPECT_EQ(rule.decide(s), want[i]) << "round " << i;
    if (want[i] == D::probe) rule.observe(s, 0, -1);
  }
  EXPECT_DOUBLE_EQ(s.ema, 0.375 / 8);
  // The text turns easy: a probe accepting 4 lifts E above the cost, drafting resumes and the
  // interval is back at 2.
  for (int i = 0; i < 4; ++i) EXPECT_EQ(rule.decide(s), D::skip);
  EXPECT_EQ(rule.decide(s), D::probe);
  rule.observe(s, 4, -1);
  EXPECT_DOUBLE_EQ(s.ema, 0.375 / 16 + 2.0);
  EXPECT_EQ(rule.decide(s), D::draft);
  EXPECT_EQ(s.interval, 2);
}

TEST(DraftSkipRule, ConfidenceHeadAveragesWithTheEma) {
  draft_skip_rule rule({.draft_cost = 0.5, .warmup_rounds = 0});
  draft_skip_state s;
  s.observed = 3;
  s.ema = 0.2;
  s.conf = 1.0;
  EXPECT_DOUBLE_EQ(draft_skip_rule::expected_accepted(s), 0.6);
  EXPECT_EQ(rule.decide(s), D::draft);
  s.conf = 0.6;  // E = 0.4
  EXPECT_EQ(rule.decide(s), D::skip);
  s.conf = -1.0;  // no head: E = ema
  EXPECT_DOUBLE_EQ(draft_skip_rule::expected_accepted(s), 0.2);
}

TEST(DraftSkipRule, ZeroCostNeverSkipsAHelpfulDrafterAndBadParamsThrow) {
  draft_skip_rule rule({.draft_cost = 0.0, .warmup_rounds = 0});
  draft_skip_state s;
  rule.observe(s, 1, -1);
  for (int i = 0; i < 10; ++i) EXPECT_EQ(rule.decide(s), D::draft);
  EXPECT_THROW(draft_skip_rule({.draft_cost = -1}), invalid_argument_error);
  EXPECT_THROW(draft_skip_rule({.ema_alpha = 0}), invalid_argument_error);
  EXPECT_THROW(draft_skip_rule({.probe_interval = 0}), invalid_argument_error);
  EXPECT_THROW(draft_skip_rule({.probe_interval = 8, .max_probe_interval = 4}), invalid_argument_error);
  draft_skip_params p;
  EXPECT_FALSE(parse_draft_skip("off", p));
  EXPECT_TRUE(parse_draft_skip("auto", p));
  EXPECT_DOUBLE_EQ(p.draft_cost, 0.25);
  EXPECT_TRUE(p.measured_cost);
  EXPECT_TRUE(parse_draft_skip("auto:1.5", p));
  EXPECT_DOUBLE_EQ(p.draft_cost, 1.5);
  EXPECT_FALSE(p.measured_cost);
  EXPECT_THROW(parse_draft_skip("auto:x", p), invalid_argument_error);
  EXPECT_THROW(parse_draft_skip("auto:-1", p), invalid_argument_error);
  EXPECT_THROW(parse_draft_skip("sometimes", p), invalid_argument_error);
}

// Proposes max_drafts copies of token 1 with confidence `conf`; records what it was given.
class recording_drafter final : public drafter {
 public:
  recording_drafter(bool head, float conf) : conf_(conf) {
    caps_.name = "recording";
    caps_.has_confidence = head;
  }
  const drafter_caps& caps() const override { return caps_; }
  void begin(int32_t slot, std::span<const int32_t>) override { ++begins[slot]; }
  void propose(std::span<const propose_request> batch, draft_batch& out) override {
    for (const propose_request& r : batch) {
      proposed_rounds[r.slot]++;
      for (int32_t k = 0; k < r.max_drafts; ++k) out.push_one_hot(r.slot, 1, conf_);
    }
  }
  void on_commit(int32_t slot, const commit_info&) override { ++commits[slot]; }
  void rollback(int32_t slot, int32_t) override { ++rollbacks[slot]; }
  void end(int32_t slot) override { ++ends[slot]; }
  std::map<int32_t, int> begins, proposed_rounds, commits, rollbacks, ends;

 private:
  drafter_caps caps_;
  float conf_;
};

// Two requests for `rounds` rounds with budget 4: slot 0 always accepts all 4, slot 1 none; the
// policy verifies all of slot 1's drafts, or `verified1` of them when >= 0.
void drive(skipping_drafter& d, int rounds, int32_t verified1 = -1) {
  draft_batch out({.max_slots = 2, .gamma_max = 4, .n_vocab = 8});
  const int32_t ctx[] = {1, 2, 3};
  d.begin(0, ctx);
  d.begin(1, ctx);
  const int32_t x0[] = {2};
  d.on_commit(0, {.tokens = x0});
  d.on_commit(1, {.tokens = x0});
  for (int i = 0; i < rounds; ++i) {
    out.clear();
    const propose_request batch[] = {{.slot = 0, .max_drafts = 4, .context = ctx},
                                     {.slot = 1, .max_drafts = 4, .context = ctx}};
    d.propose(batch, out);
    const int32_t good[] = {1, 1, 1, 1, 2}, bad[] = {5};
    d.on_commit(0, {.tokens = good, .n_accepted = 4, .n_proposed = out.length(0)});
    d.on_commit(1, {.tokens = bad, .n_accepted = 0, .n_proposed = verified1 >= 0 ? verified1 : out.length(1)});
  }
  d.rollback(1, 2);
  d.end(0);
  d.end(1);
}

TEST(SkippingDrafter, SkippedRequestsNeverReachProposeButEveryCommitDoes) {
  auto inner = std::make_unique<recording_drafter>(/*head=*/false, 1.0f);
  recording_drafter& rec = *inner;
  skipping_drafter d(std::move(inner), 2,
                     {.draft_cost = 0.5, .ema_alpha = 0.5, .warmup_rounds = 2, .probe_interval = 2,
                      .max_probe_interval = 4});
  drive(d, 8);
  // Slot 1: rounds 1-2 warm-up, 3-4 skipped, 5 probe, 6-8 skipped (interval 4).
  EXPECT_EQ(rec.proposed_rounds[0], 8);
  EXPECT_EQ(rec.proposed_rounds[1], 3);
  EXPECT_EQ(rec.commits[0], 9);  // x0 + 8 rounds
  EXPECT_EQ(rec.commits[1], 9);
  EXPECT_EQ(rec.begins[1], 1);
  EXPECT_EQ(rec.rollbacks[1], 1);
  EXPECT_EQ(rec.ends[0], 1);
  EXPECT_EQ(rec.ends[1], 1);
  EXPECT_EQ(d.stats().request_rounds, 16);
  EXPECT_EQ(d.stats().skipped_rounds, 5);
  EXPECT_EQ(d.stats().probe_rounds, 1);
  EXPECT_EQ(d.stats().drafts_saved, 20);
}

TEST(SkippingDrafter, ConfidentHeadKeepsDraftingAndOffOnlyCounts) {
  // The head expects 0.9 + 0.81 + 0.729 + 0.6561 = 3.0951 accepted: E = (0 + 3.0951) / 2 > 0.5,
  // so even the slot that accepts nothing keeps drafting.
  skipping_drafter head(std::make_unique<recording_drafter>(true, 0.9f), 2,
                        {.draft_cost = 0.5, .warmup_rounds = 2, .probe_interval = 2});
  drive(head, 8);
  EXPECT_EQ(head.stats().skipped_rounds, 0);
  skipping_drafter off(std::make_unique<recording_drafter>(false, 1.0f), 2, {.draft_cost = 0.5}, /*enabled=*/false);
  drive(off, 8);
  EXPECT_EQ(off.stats().request_rounds, 16);
  EXPECT_EQ(off.stats().skipped_rounds, 0);
  EXPECT_THROW(skipping_drafter(nullptr, 2, {}), invalid_argument_error);
}

// The head's expectation counts only the drafts the policy verified: a confident head whose
// drafts the scheduler declines (0 verified) or truncates to one (E = (0 + 0.9) / 2 = 0.45 <
// 0.5) stops drafting like a head-less drafter; two verified (E = (0 + 1.71) / 2) keep it going.
TEST(SkippingDrafter, ConfidenceCountsOnlyTheDraftsThePolicyVerified) {
  for (int32_t verified : {0, 1, 2}) {
    SCOPED_TRACE(verified);
    auto inner = std::make_unique<recording_drafter>(/*head=*/true, 0.9f);
    recording_drafter& rec = *inner;
    skipping_drafter d(std::move(inner), 2,
                       {.draft_cost = 0.5, .ema_alpha = 0.5, .warmup_rounds = 2, .probe_interval = 2,
                        .max_probe_interval = 4});
    drive(d, 8, verified);
    EXPECT_EQ(rec.proposed_rounds[0], 8);
    EXPECT_EQ(rec.proposed_rounds[1], verified == 2 ? 8 : 3) << "same schedule as the head-less case above";
  }
}

TEST(SkippingDrafter, MetricsCarryAndMergeTheCounts) {
  spec_metrics a(4), b(4);
  EXPECT_FALSE(a.to_json().contains("draft_skip"));  // only runs with --draft-skip report it
  a.add_draft_skip({.request_rounds = 10, .skipped_rounds = 4, .probe_rounds = 1, .drafts_saved = 16,
                    .propose_s = 0.5, .commit_s = 0.25});
  b.add_draft_skip({.request_rounds = 6, .skipped_rounds = 2, .probe_rounds = 0, .drafts_saved = 8,
                    .propose_s = 0.25, .commit_s = 0.0});
  a.merge(b);
  const nlohmann::json j = a.to_json().at("draft_skip");
  EXPECT_EQ(j.at("request_rounds"), 16);
  EXPECT_EQ(j.at("skipped_rounds"), 6);
  EXPECT_EQ(j.at("probe_rounds"), 1);
  EXPECT_EQ(j.at("drafts_saved"), 24);
  EXPECT_DOUBLE_EQ(j.at("drafter_propose_s").get<double>(), 0.75);
  EXPECT_DOUBLE_EQ(j.at("drafter_commit_s").get<double>(), 0.25);
}

// Runs `prompts` through a spec_decoder with `d`, max_requests at a time; returns token ids.
std::vector<std::vector<int32_t>> run_all(backend& be, drafter* d, int32_t gamma, int32_t max_requests,
                                          const model* m, const std::vector<std::vector<int32_t>>& prompts,
                                          const sampling_params& sp) {
  fixed_gamma_policy pol(gamma);
  spec_decoder dec(be, d, pol, m ? &m->tokenizer() : nullptr, m ? m->stop_ids() : std::span<const int32_t>{},
                   {.max_requests = max_requests});
  std::vector<std::vector<int32_t>> out;
  for (const spec_result& r : spec_generate_all(dec, prompts, sp, false)) out.push_back(r.gen.token_ids);
  return out;
}

TEST(SkippingDrafter, TinyModelNgramGreedyEqualsPlainDecoding) {
  // Repetitive prompts so the n-gram drafter has matches, and random ones where it has few.
  const test::tiny_model tm(/*n_vocab=*/12, /*n_layer=*/2, /*seed=*/5);
  cpu_backend be(tm.cfg, tm.w, test::tiny_model::options(4));
  const sampling_params sp{.max_tokens = 60};
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 1, 2, 1}, {3, 4, 5, 3, 4, 5}, {7}, {0, 9, 11, 2},
                                                     {6, 6, 6, 6}, {10, 1, 10, 1}, {8, 2, 5}, {4, 11}};
  std::vector<std::vector<int32_t>> plain(prompts.size());
  std::transform(prompts.begin(), prompts.end(), plain.begin(),
                 [&](const std::vector<int32_t>& p) { return generate(be, nullptr, {}, p, sp).token_ids; });
  for (double cost : {0.25, 1.0, 3.0}) {
    skipping_drafter d(std::make_unique<ngram_drafter>(ngram_drafter_params{.min_n = 1, .max_n = 3, .max_slots = 4}),
                       4, {.draft_cost = cost});
    EXPECT_EQ(run_all(be, &d, 4, 4, nullptr, prompts, sp), plain) << "cost " << cost;
    if (cost >= 3.0) EXPECT_GT(d.stats().skipped_rounds, 0) << "cost 3 must skip";
    EXPECT_GT(d.stats().request_rounds, d.stats().skipped_rounds);
  }
}

TEST(SkippingDrafter, TrainedDrafterWithHeadGreedyEqualsPlainDecoding) {
  DSPARK_REQUIRE_MODEL(path);
  static const model m = load_model(path);
  cpu_backend_options o;
  o.n_seq_max = 2;
  o.n_ctx = 512;
  o.max_tokens_per_step = 64;
  o.max_capture_layers = 5;
  cpu_backend be(m.config(), m.weights(), o);
  sampling_params sp;
  sp.max_tokens = 16;
  std::vector<std::vector<int32_t>> prompts;
  for (const char* t : {"The capital of France is", "def fibonacci(n):", "List three colours:"})
    prompts.push_back(encode_chat_prompt(m.tokenizer(), t));
  std::vector<std::vector<int32_t>> plain;
  for (const auto& p : prompts) plain.push_back(generate(m, be, p, sp).token_ids);
  drafter_runtime_params rp;
  rp.max_ctx = 512;
  rp.max_slots = 2;
  const std::string dir = test::random_target_drafter(m, "dspark");
  // A random drafter is rarely accepted: with cost 1 it is skipped after warm-up.
  skipping_drafter d(load_trained_drafter(dir, m.config(), m.weights(), rp), 2, {.draft_cost = 1.0});
  ASSERT_TRUE(d.caps().has_confidence);
  EXPECT_EQ(run_all(be, &d, 4, 2, &m, prompts, sp), plain);
  EXPECT_GT(d.stats().skipped_rounds, 0);
  EXPECT_GT(d.stats().request_rounds, d.stats().skipped_rounds);
}

// The measured draft cost by hand: draft seconds per request of the batch / per-request verify
// seconds, where a round's verify time is its interval minus its drafting and commit time.
TEST(DraftCostMeter, KnownRoundsGiveTheCostByHand) {
  draft_cost_meter m(0.2, 0.25);
  EXPECT_DOUBLE_EQ(m.cost(), 0.25);  // no sample yet
  m.round_start(0.0);
  m.round_drafted(0.002, 2, 4);  // 2 of 4 drafted: 0.5 ms per request of the batch
  m.committed(0.001);
  m.round_start(0.013);  // verify 0.013 - 0.002 - 0.001 = 10 ms for 4 requests: 2.5 ms each
  EXPECT_DOUBLE_EQ(m.draft_s_per_request(), 0.0005);
  EXPECT_DOUBLE_EQ(m.verify_s_per_request(), 0.0025);
  EXPECT_NEAR(m.cost(), 0.2, 1e-12);
  m.round_drafted(0.004, 4, 4);  // all 4: 1 ms each -> ema 0.5 + 0.2 * 0.5 = 0.6 ms
  m.round_start(0.013 + 0.024);  // verify 20 ms: 5 ms each -> ema 2.5 + 0.2 * 2.5 = 3 ms
  EXPECT_NEAR(m.draft_s_per_request(), 0.0006, 1e-12);
  EXPECT_NEAR(m.verify_s_per_request(), 0.003, 1e-12);
  EXPECT_NEAR(m.cost(), 0.2, 1e-9);
  // An idle gap (an interval of seconds) is an outlier: ignored...
  m.round_drafted(0.0, 0, 4);
  m.round_start(0.037 + 2.0);
  EXPECT_NEAR(m.verify_s_per_request(), 0.003, 1e-12);
  // ...unless three come in a row: the load changed, the average restarts there.
  m.round_drafted(0.0, 0, 4);
  m.round_start(2.037 + 2.0);
  m.round_drafted(0.0, 0, 4);
  m.round_start(4.037 + 2.0);
  EXPECT_NEAR(m.verify_s_per_request(), 0.5, 1e-9);
  EXPECT_THROW(draft_cost_meter(0.0), invalid_argument_error);
  EXPECT_THROW(draft_cost_meter(0.5, -1.0), invalid_argument_error);
}

// A drafter whose propose takes propose_ms per call (4 one-hot drafts per request).
class slow_drafter final : public drafter {
 public:
  explicit slow_drafter(int propose_ms) : ms_(propose_ms) {}
  const drafter_caps& caps() const override { return caps_; }
  void begin(int32_t, std::span<const int32_t>) override {}
  void propose(std::span<const propose_request> batch, draft_batch& out) override {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms_));
    for (const propose_request& r : batch)
      for (int32_t k = 0; k < r.max_drafts; ++k) out.push_one_hot(r.slot, 1, 1.0f);
  }
  void on_commit(int32_t, const commit_info&) override {}
  void rollback(int32_t, int32_t) override {}
  void end(int32_t) override {}

 private:
  drafter_caps caps_;
  int ms_;
};

// With "auto" the threshold follows the measured cost: one request that gets 1 draft accepted
// per round keeps drafting while drafting (10 ms) is cheap next to its verify step (40 ms:
// cost ~0.25 < 1), and stops (apart from probes) when the verify step shrinks to 1 ms (cost ~10).
// Generous bounds: only the side of the threshold matters, not the timing.
TEST(SkippingDrafter, MeasuredCostFollowsTheLoad) {
  draft_skip_params p;
  ASSERT_TRUE(parse_draft_skip("auto", p));
  skipping_drafter d(std::make_unique<slow_drafter>(10), 1, p);
  draft_batch out({.max_slots = 1, .gamma_max = 4, .n_vocab = 8});
  const int32_t ctx[] = {1, 2, 3};
  d.begin(0, ctx);
  auto rounds = [&](int n, int verify_ms) {
    const int64_t before = d.stats().skipped_rounds;
    for (int i = 0; i < n; ++i) {
      out.clear();
      const propose_request batch[] = {{.slot = 0, .max_drafts = 4, .context = ctx}};
      d.propose(batch, out);
      std::this_thread::sleep_for(std::chrono::milliseconds(verify_ms));  // the verify step
      const int32_t toks[] = {1, 2};
      d.on_commit(0, {.tokens = toks, .n_accepted = 1, .n_proposed = out.length(0)});
    }
    return d.stats().skipped_rounds - before;
  };
  EXPECT_EQ(rounds(8, 40), 0);
  EXPECT_GT(d.cost_meter().cost(), 0.05);
  EXPECT_LT(d.cost_meter().cost(), 0.8);
  rounds(20, 1);  // the averages move to the new load (alpha 0.2: 0.8^20 of the old one is left)
  EXPECT_GT(d.cost_meter().cost(), 2.0);
  EXPECT_GE(rounds(10, 1), 6);  // mostly skipped: only probes draft
  d.end(0);
}

}  // namespace
}  // namespace dspark

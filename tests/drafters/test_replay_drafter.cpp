// Replayed acceptance and round recording (models/drafters/replay_drafter.h,
// recording_drafter.h, round_trace.h) on the synthetic tiny model (random bf16 weights, CPU):
//   - under the fixed policy the real verifier accepts exactly min(l, a) of every replayed
//     round, with the trace's confidences (the recorder wrapped around the replay drafter is
//     compared with a hand-written trace), and the output equals plain generate();
//   - an oracle that is wrong at one position is detected, counted once, and the request then
//     proposes nothing, still with plain decoding's output;
//   - the recorder against the decoder's own metrics, per request, with the layer-skip drafter;
//   - with capture layers the replay gathers one feature row per committed context position;
//   - trace files and replay specs with errors are rejected with clear messages.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/cpu_backend.h"
#include "engine/generator.h"
#include "engine/spec/policy.h"
#include "engine/spec/spec_decoder.h"
#include "models/arch/synthetic_model.h"
#include "models/drafters/layerskip_drafter.h"
#include "models/drafters/recording_drafter.h"
#include "models/drafters/replay_drafter.h"
#include "tests/drafters/drafter_fixture.h"

namespace dspark {
namespace {

constexpr int32_t k_gamma = 4;

std::unique_ptr<cpu_backend> tiny_backend(const synthetic_model& m, int32_t n_seq) {
  cpu_backend_options o;
  o.n_threads = 1;
  o.n_seq_max = n_seq;
  o.n_ctx = 128;
  o.max_tokens_per_step = 64;
  o.precision = matmul_precision::f32_activations;
  return std::make_unique<cpu_backend>(m.config, m.weights, o);
}

std::vector<std::vector<int32_t>> tiny_prompts(int64_t n_vocab, int n) {
  std::vector<std::vector<int32_t>> p;
  for (int i = 0; i < n; ++i) {
    std::vector<int32_t> q;
    for (int k = 0; k < 5 + 3 * i; ++k) q.push_back(static_cast<int32_t>((37 * i + 11 * k + 5) % n_vocab));
    p.push_back(q);
  }
  return p;
}

// A hand-written trace: 3 records whose rounds accept 0..4 drafts with distinct confidences.
round_trace hand_trace() {
  round_trace t;
  t.header = {"hand", true, k_gamma, "test"};
  const std::vector<std::vector<int32_t>> accepted = {{4, 0, 2, 1, 3}, {1, 1, 4, 0}, {2, 3, 0, 0, 4, 1}};
  for (size_t r = 0; r < accepted.size(); ++r) {
    trace_request q;
    q.index = static_cast<int64_t>(r);
    for (size_t k = 0; k < accepted[r].size(); ++k) {
      trace_round tr;
      for (int j = 0; j < k_gamma; ++j) tr.confidence.push_back(0.9f - 0.1f * j - 0.01f * static_cast<float>(k + r));
      tr.verified = k_gamma;
      tr.accepted = accepted[r][k];
      q.rounds.push_back(tr);
    }
    t.requests.push_back(q);
  }
  return t;
}

// The rounds request n (in begin order) replays: records n mod R onwards, as a flat list.
std::vector<trace_round> replayed_rounds(const round_trace& t, int64_t n, size_t count) {
  std::vector<trace_round> out;
  size_t rec = static_cast<size_t>(n) % t.requests.size(), round = 0;
  while (out.size() < count) {
    if (round >= t.requests[rec].rounds.size()) {
      rec = (rec + 1) % t.requests.size();
      round = 0;
    }
    out.push_back(t.requests[rec].rounds[round++]);
  }
  return out;
}

struct replay_run {
  std::vector<spec_result> results;
  round_trace recorded;
  int64_t misses = 0;
  int64_t feature_rows = 0;
};

// Greedy decoding of `prompts` through the replay drafter (charged 1 layer on the target,
// reading the features of capture_layers), wrapped in the recorder; oracles as given.
replay_run run_replay(const synthetic_model& m, backend& be, const std::vector<std::vector<int32_t>>& prompts,
                      std::vector<replay_oracle> oracles, const std::string& trace_name,
                      std::vector<int32_t> capture_layers = {}) {
  replay_drafter_params p;
  p.max_slots = 2;
  p.n_layers = 1;
  p.target = &be;
  p.capture_layers = std::move(capture_layers);
  p.n_embd = m.config.n_embd;
  auto replay = std::make_unique<replay_drafter>(hand_trace(), std::move(oracles), m.config.n_vocab, p);
  replay_drafter* rd = replay.get();
  const std::string path = test::scratch_dir("replay") + "/" + trace_name;
  recording_drafter rec(std::move(replay), 2, k_gamma, path, "replayed");
  fixed_gamma_policy pol(k_gamma);
  spec_decoder dec(be, &rec, pol, nullptr, {}, {.max_requests = 2});
  sampling_params sp;
  sp.max_tokens = 24;
  replay_run out;
  out.results = spec_generate_all(dec, prompts, sp, false);
  out.misses = rd->oracle_misses();
  out.feature_rows = rd->feature_rows();
  out.recorded = read_round_trace(path);
  return out;
}

// The tiny model, its backend, five prompts and their oracles (24 greedy tokens each).
struct replay_setup {
  std::unique_ptr<synthetic_model> m = make_synthetic_model("tiny", 7);
  std::unique_ptr<backend> be = tiny_backend(*m, 2);
  std::vector<std::vector<int32_t>> prompts = tiny_prompts(m->config.n_vocab, 5);
  sampling_params sp = [] {
    sampling_params p;
    p.max_tokens = 24;
    return p;
  }();
  std::vector<replay_oracle> oracles = compute_replay_oracles(*be, prompts, sp, nullptr, {}, 2);
};

TEST(ReplayDrafter, ReproducesTheTraceAcceptanceAndPlainOutput) {
  const replay_setup f;
  const auto& [m, be, prompts, sp, oracles] = f;
  const replay_run r = run_replay(*m, *be, prompts, oracles, "rec.jsonl");
  EXPECT_EQ(r.misses, 0);
  const round_trace t = hand_trace();
  ASSERT_EQ(r.recorded.requests.size(), prompts.size());
  EXPECT_EQ(r.recorded.header.drafter, "replay(hand)");
  EXPECT_TRUE(r.recorded.header.has_confidence);
  int64_t checked = 0;
  for (const trace_request& q : r.recorded.requests) {
    const std::vector<trace_round> want = replayed_rounds(t, q.index, q.rounds.size());
    for (size_t k = 0; k < q.rounds.size(); ++k) {
      const trace_round& got = q.rounds[k];
      ASSERT_LE(got.confidence.size(), want[k].confidence.size());
      for (size_t j = 0; j < got.confidence.size(); ++j) EXPECT_NEAR(got.confidence[j], want[k].confidence[j], 1e-4);
      EXPECT_EQ(got.verified, static_cast<int32_t>(got.confidence.size())) << "fixed policy verifies the whole chain";
      EXPECT_EQ(got.accepted, std::min(got.verified, want[k].accepted)) << "request " << q.index << " round " << k;
      checked += got.verified == k_gamma;
    }
  }
  EXPECT_GT(checked, 10) << "most rounds carry a full chain";
  for (size_t i = 0; i < prompts.size(); ++i) {
    const generation_result plain = generate(*be, nullptr, {}, prompts[i], sp);
    EXPECT_EQ(r.results[i].gen.token_ids, plain.token_ids) << "prompt " << i;
    EXPECT_EQ(r.results[i].gen.token_ids, oracles[i].continuation);
  }
}

// With capture layers the replay reads the target's features as a trained drafter does: one
// row per prompt position (prefill chunks) and x0..x_a of every round but a request's last
// (a finished request gets no on_commit); acceptance and output unchanged.
TEST(ReplayDrafter, ReadsFeaturesOfEveryCommittedRow) {
  const replay_setup f;
  const auto& [m, be, prompts, sp, oracles] = f;
  const replay_run plain_features = run_replay(*m, *be, prompts, oracles, "rec_plain.jsonl");
  const replay_run r = run_replay(*m, *be, prompts, oracles, "rec_features.jsonl", {0, 1});
  EXPECT_EQ(plain_features.feature_rows, 0);
  EXPECT_EQ(r.misses, 0);
  // Every context position but the last has a row, less the final round's (at most gamma + 1
  // a request); the prompts' rows alone are far fewer.
  int64_t positions = 0, prompt_rows = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    EXPECT_EQ(r.results[i].gen.token_ids, oracles[i].continuation) << "prompt " << i;
    positions += static_cast<int64_t>(prompts[i].size() + r.results[i].gen.token_ids.size()) - 1;
    prompt_rows += static_cast<int64_t>(prompts[i].size());
  }
  EXPECT_LE(r.feature_rows, positions);
  EXPECT_GE(r.feature_rows, positions - static_cast<int64_t>(prompts.size()) * (k_gamma + 1));
  EXPECT_GT(r.feature_rows, prompt_rows + 10 * static_cast<int64_t>(prompts.size()));
  ASSERT_EQ(r.recorded.requests.size(), plain_features.recorded.requests.size());
  for (size_t q = 0; q < r.recorded.requests.size(); ++q) {
    ASSERT_EQ(r.recorded.requests[q].rounds.size(), plain_features.recorded.requests[q].rounds.size());
    for (size_t k = 0; k < r.recorded.requests[q].rounds.size(); ++k)
      EXPECT_EQ(r.recorded.requests[q].rounds[k].accepted, plain_features.recorded.requests[q].rounds[k].accepted);
  }
}

TEST(ReplayDrafter, DetectsAndCountsAnOracleMiss) {
  const auto m = make_synthetic_model("tiny", 7);
  const auto be = tiny_backend(*m, 2);
  const auto prompts = tiny_prompts(m->config.n_vocab, 3);
  sampling_params sp;
  sp.max_tokens = 24;
  std::vector<replay_oracle> oracles = compute_replay_oracles(*be, prompts, sp, nullptr, {}, 2);
  int32_t& wrong = oracles[1].continuation[6];
  wrong = (wrong + 7) % static_cast<int32_t>(m->config.n_vocab);
  const replay_run r = run_replay(*m, *be, prompts, oracles, "miss.jsonl");
  EXPECT_EQ(r.misses, 1);
  for (size_t i = 0; i < prompts.size(); ++i)
    EXPECT_EQ(r.results[i].gen.token_ids, generate(*be, nullptr, {}, prompts[i], sp).token_ids) << "prompt " << i;
  // Request 1 (begun second): once its committed tokens pass position 6, it drafts nothing.
  const trace_request* q = nullptr;
  for (const trace_request& x : r.recorded.requests)
    if (x.index == 1) q = &x;
  ASSERT_NE(q, nullptr);
  int32_t committed = 1;  // x0
  bool past = false;
  for (const trace_round& t : q->rounds) {
    if (past) {
      EXPECT_TRUE(t.confidence.empty()) << "no drafts after the miss";
    }
    committed += t.accepted + 1;
    past = past || committed > 6;
  }
  EXPECT_TRUE(past);
}

TEST(RecordingDrafter, MatchesTheDecodersMetricsPerRequest) {
  const auto m = make_synthetic_model("tiny", 3);
  const auto be = tiny_backend(*m, 2);
  layerskip_drafter_params lp;
  lp.n_layers = 1;
  lp.max_slots = 2;
  lp.shared_target = be.get();
  const std::string path = test::scratch_dir("replay") + "/layerskip.jsonl";
  recording_drafter rec(std::make_unique<layerskip_drafter>(m->config, m->weights, lp, nullptr), 2, 3, path, "n");
  fixed_gamma_policy pol(3);
  spec_decoder dec(*be, &rec, pol, nullptr, {}, {.max_requests = 2});
  sampling_params sp;
  sp.max_tokens = 20;
  const auto prompts = tiny_prompts(m->config.n_vocab, 4);
  const std::vector<spec_result> res = spec_generate_all(dec, prompts, sp, false);
  const round_trace t = read_round_trace(path);
  EXPECT_EQ(t.header.drafter, "layerskip:1");
  EXPECT_EQ(t.header.gamma_max, 3);
  ASSERT_EQ(t.requests.size(), prompts.size());
  EXPECT_EQ(rec.requests_written(), 4);
  for (const trace_request& q : t.requests) {
    // spec_generate_all begins prompts in order, so begin order = prompt index.
    const spec_metrics& mt = res[static_cast<size_t>(q.index)].metrics;
    EXPECT_EQ(q.prompt_tokens, static_cast<int32_t>(prompts[static_cast<size_t>(q.index)].size()));
    ASSERT_EQ(static_cast<int64_t>(q.rounds.size()), mt.verify_steps() - 1) << "all but the last round";
    int64_t l = 0, a = 0;
    std::vector<int64_t> verified_at(3, 0), accepted_at(3, 0);
    for (const trace_round& r : q.rounds) {
      EXPECT_EQ(static_cast<int32_t>(r.confidence.size()), r.verified) << "fixed policy verifies what was proposed";
      for (float c : r.confidence) EXPECT_TRUE(c > 0.0f && c <= 1.0f);
      l += r.verified;
      a += r.accepted;
      for (int32_t k = 0; k < r.verified; ++k) ++verified_at[static_cast<size_t>(k)];
      for (int32_t k = 0; k < r.accepted; ++k) ++accepted_at[static_cast<size_t>(k)];
    }
    // The missing last round accounts for the rest, at most one chain.
    EXPECT_GE(mt.draft_tokens_verified() - l, 0);
    EXPECT_LE(mt.draft_tokens_verified() - l, 3);
    EXPECT_GE(mt.draft_tokens_accepted() - a, 0);
    EXPECT_LE(mt.draft_tokens_accepted() - a, mt.draft_tokens_verified() - l);
    for (int32_t k = 0; k < 3; ++k) {
      EXPECT_LE(mt.verified_at(k) - verified_at[static_cast<size_t>(k)], 1);
      EXPECT_GE(mt.verified_at(k) - verified_at[static_cast<size_t>(k)], 0);
      EXPECT_LE(mt.accepted_at(k) - accepted_at[static_cast<size_t>(k)], 1);
      EXPECT_GE(mt.accepted_at(k) - accepted_at[static_cast<size_t>(k)], 0);
    }
  }
}

TEST(RoundTrace, RejectsMalformedFiles) {
  const std::string dir = test::scratch_dir("replay");
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir + "/" + name) << text;
    return dir + "/" + name;
  };
  const std::string header = trace_header_line({"d", true, 2, ""}) + "\n";
  EXPECT_THROW(read_round_trace(dir + "/absent.jsonl"), format_error);
  EXPECT_THROW(read_round_trace(write("empty.jsonl", "")), format_error);
  EXPECT_THROW(read_round_trace(write("noheader.jsonl", "{\"request\": 0}\n")), format_error);
  EXPECT_THROW(read_round_trace(write("a_gt_l.jsonl", header + R"({"request":0,"prompt_tokens":3,"rounds":[{"c":[0.5,0.5],"l":1,"a":2}]})" "\n")),
               format_error);
  EXPECT_THROW(read_round_trace(write("g_gt_gamma.jsonl", header + R"({"request":0,"prompt_tokens":3,"rounds":[{"c":[0.5,0.5,0.5],"l":1,"a":0}]})" "\n")),
               format_error);
  EXPECT_THROW(read_round_trace(write("conf.jsonl", header + R"({"request":0,"prompt_tokens":3,"rounds":[{"c":[1.5],"l":1,"a":0}]})" "\n")),
               format_error);
  EXPECT_THROW(read_round_trace(write("json.jsonl", header + "{not json\n")), format_error);
  const round_trace ok = read_round_trace(write("ok.jsonl", header + R"({"request":4,"prompt_tokens":3,"rounds":[{"c":[0.5,0.25],"l":2,"a":1}]})" "\n"));
  ASSERT_EQ(ok.requests.size(), 1u);
  EXPECT_EQ(ok.requests[0].index, 4);
  EXPECT_EQ(ok.requests[0].rounds[0].accepted, 1);
  EXPECT_FLOAT_EQ(ok.requests[0].rounds[0].confidence[1], 0.25f);
}

// Between load levels bench_load restarts the record assignment with the prompt cycle, so
// every run of a level replays the same records for the same prompts: after
// restart_assignment the next request begins at record 0 again. Record r's first round has
// c_1 = 0.9 - 0.01 r (hand_trace).
TEST(ReplayDrafter, RestartAssignmentBeginsAtTheFirstRecordAgain) {
  const replay_setup f;
  replay_drafter_params p;
  p.max_slots = 1;
  p.n_layers = 0;
  replay_drafter d(hand_trace(), f.oracles, f.m->config.n_vocab, p);
  draft_batch out({.max_slots = 1, .gamma_max = k_gamma, .n_vocab = f.m->config.n_vocab});
  auto first_confidence = [&](size_t prompt) {
    std::vector<int32_t> ctx = f.prompts[prompt];
    d.begin(0, ctx);
    ctx.push_back(f.oracles[prompt].continuation[0]);  // x0, as the decoder commits it
    d.on_commit(0, {.tokens = std::span<const int32_t>(&ctx.back(), 1)});
    out.clear();
    const propose_request q{.slot = 0, .max_drafts = k_gamma, .context = ctx};
    d.propose({&q, 1}, out);
    EXPECT_THROW(d.restart_assignment(), invalid_argument_error) << "a request is open";
    d.end(0);
    return out.length(0) > 0 ? out.confidences(0)[0] : -1.0f;
  };
  EXPECT_NEAR(first_confidence(0), 0.90f, 1e-6);
  EXPECT_NEAR(first_confidence(1), 0.89f, 1e-6);
  d.restart_assignment();
  EXPECT_EQ(d.requests_begun(), 0);
  EXPECT_NEAR(first_confidence(1), 0.90f, 1e-6) << "record 0 again, whatever the prompt";
  EXPECT_NEAR(first_confidence(2), 0.89f, 1e-6);
}

TEST(ReplayDrafter, SpecsAndSetupErrors) {
  const replay_spec a = parse_replay_spec("replay:t.jsonl");
  EXPECT_EQ(a.trace_path, "t.jsonl");
  EXPECT_EQ(a.n_layers, 2);
  EXPECT_FALSE(a.all_logits);
  const replay_spec b = parse_replay_spec("replay:x/y.jsonl,layers=0,logits=all");
  EXPECT_EQ(b.trace_path, "x/y.jsonl");
  EXPECT_EQ(b.n_layers, 0);
  EXPECT_TRUE(b.all_logits);
  EXPECT_EQ(b.feature_layers, 0);
  EXPECT_EQ(parse_replay_spec("replay:t.jsonl,features=5").feature_layers, 5);
  EXPECT_FALSE(b.device_features);
  EXPECT_TRUE(parse_replay_spec("replay:t.jsonl,features=5,features_on=device").device_features);
  EXPECT_FALSE(parse_replay_spec("replay:t.jsonl,features=5,features_on=host").device_features);
  EXPECT_THROW(parse_replay_spec("replay:t.jsonl,features_on=gpu"), invalid_argument_error);
  for (const char* bad : {"ngram", "replay:", "replay:t,layers=x", "replay:t,layers=-1", "replay:t,colour=red",
                          "replay:t,features=9", "replay:t,features=", "replay:t,features=2x"})
    EXPECT_THROW(parse_replay_spec(bad), invalid_argument_error) << bad;
  EXPECT_EQ(spread_capture_layers(30, 5), (std::vector<int32_t>{1, 8, 15, 21, 28}));
  EXPECT_EQ(spread_capture_layers(36, 5), (std::vector<int32_t>{1, 9, 18, 26, 34}));
  EXPECT_EQ(spread_capture_layers(30, 1), (std::vector<int32_t>{15}));
  EXPECT_EQ(spread_capture_layers(4, 2), (std::vector<int32_t>{1, 2}));
  EXPECT_THROW(spread_capture_layers(4, 3), invalid_argument_error);
  EXPECT_THROW(spread_capture_layers(30, 0), invalid_argument_error);
  round_trace empty;
  empty.header = {"d", true, 2, ""};
  EXPECT_THROW(replay_drafter(empty, {}, 16, {}), invalid_argument_error) << "no rounds";
  replay_drafter_params p;
  p.n_layers = 1;  // a cost without a target
  EXPECT_THROW(replay_drafter(hand_trace(), {}, 16, p), invalid_argument_error);
  p.n_layers = 0;
  p.capture_layers = {0};  // without the target's width
  EXPECT_THROW(replay_drafter(hand_trace(), {}, 16, p), invalid_argument_error);
  p.capture_layers.clear();
  replay_drafter d(hand_trace(), {}, 16, p);
  const std::vector<int32_t> prompt = {1, 2, 3};
  EXPECT_THROW(d.begin(0, prompt), invalid_argument_error) << "no oracle for the prompt";
}

}  // namespace
}  // namespace dspark

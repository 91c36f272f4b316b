// The closed-loop load level (engine/spec/load_loop.h) on the synthetic tiny model, CPU:
//   - C requests are always in flight inside the window (mean active == C exactly), every
//     sample ran to its own max_tokens, the window counts every committed token, the decoder is
//     empty afterwards, and window callbacks fire once each;
//   - the figures are the hand-computed ones for given samples (quantiles, tau, verify length);
//   - bench_load itself (the binary) on the tiny model at C = 1, 2 writes valid JSON lines.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/cpu_backend.h"
#include "engine/generator.h"
#include "engine/spec/load_loop.h"
#include "engine/spec/policy.h"
#include "engine/spec/spec_decoder.h"
#include "models/arch/synthetic_model.h"
#include "models/drafters/ngram_drafter.h"
#include "tests/test_support.h"

namespace dspark {
namespace {

std::unique_ptr<cpu_backend> tiny_backend(const synthetic_model& m, int32_t n_seq) {
  cpu_backend_options o;
  o.n_threads = 1;
  o.n_seq_max = n_seq;
  o.n_ctx = 96;
  o.max_tokens_per_step = 64;
  return std::make_unique<cpu_backend>(m.config, m.weights, o);
}

TEST(LoadLoop, KeepsConcurrencyAndCountsTheWindow) {
  const auto m = make_synthetic_model("tiny", 5);
  const auto be = tiny_backend(*m, 3);
  std::vector<std::vector<int32_t>> prompts;
  std::vector<int32_t> max_tokens;
  for (int i = 0; i < 5; ++i) {
    prompts.push_back(std::vector<int32_t>(static_cast<size_t>(4 + i), 10 + i));
    max_tokens.push_back(6 + 3 * i);
  }
  ngram_drafter nd(ngram_drafter_params{1, 3, 3});
  fixed_gamma_policy pol(3);
  spec_decoder dec(*be, &nd, pol, nullptr, {}, {.max_requests = 3});
  size_t next = 0;
  int opened = 0, closed = 0;
  load_level_options o;
  o.concurrency = 3;
  o.measured_requests = 7;
  o.max_tokens = max_tokens;
  o.on_window_open = [&] { ++opened; };
  o.on_window_close = [&] { ++closed; };
  const load_level_result r = run_load_level(dec, prompts, next, o);
  EXPECT_EQ(opened, 1);
  EXPECT_EQ(closed, 1);
  EXPECT_GE(r.samples.size(), 7u);
  EXPECT_EQ(r.mean_active(), 3.0) << "the closed loop holds C requests every step";
  EXPECT_GT(r.steps, 0);
  EXPECT_LE(r.cancelled, 2) << "the window closed after a step that finished at least one sample";
  int64_t sample_tokens = 0;
  for (const load_sample& s : r.samples) {
    bool known = false;
    for (int32_t mt : max_tokens) known = known || s.generated == mt;
    EXPECT_TRUE(known) << "no EOS on the synthetic model: every request runs to its max_tokens, got " << s.generated;
    EXPECT_GE(s.rounds, 1);
    sample_tokens += s.generated;
  }
  EXPECT_GE(r.window_tokens, sample_tokens) << "the window also counts tokens of requests begun before it";
  EXPECT_GE(next, 3u + r.samples.size()) << "the warm-up wave, then every sample was submitted";
  EXPECT_DOUBLE_EQ(r.aggregate_tokens_per_s(), static_cast<double>(r.window_tokens) / r.window_s);
  // The decoder is empty again: a full batch can be added.
  for (int i = 0; i < 3; ++i) dec.add(prompts[0], sampling_params{});
  dec.run();
  o.concurrency = 4;
  EXPECT_THROW(run_load_level(dec, prompts, next, o), invalid_argument_error);
}

TEST(LoadLoop, FiguresFromSamples) {
  load_level_result r;
  r.window_s = 2.0;
  r.window_tokens = 50;
  r.steps = 4;
  r.active_sum = 10;
  // generated, ttft, decode, rounds, verified, accepted
  r.samples = {{11, 0.1, 1.0, 5, 10, 4}, {21, 0.3, 4.0, 10, 20, 6}, {1, 0.2, 0.0, 0, 0, 0}, {5, 0.4, 0.2, 2, 2, 2}};
  EXPECT_DOUBLE_EQ(r.aggregate_tokens_per_s(), 25.0);
  EXPECT_DOUBLE_EQ(r.mean_active(), 2.5);
  // per-user over samples with >= 2 tokens: 10/1, 20/4, 4/0.2 -> mean of 10, 5, 20
  EXPECT_DOUBLE_EQ(r.per_user_tokens_per_s(), 35.0 / 3.0);
  // TPOT: 0.1, 0.2, 0.05 sorted 0.05, 0.1, 0.2: p50 = 0.1, p99 nearest rank = 0.2
  EXPECT_DOUBLE_EQ(r.tpot_s(0.5), 0.1);
  EXPECT_DOUBLE_EQ(r.tpot_s(0.99), 0.2);
  EXPECT_DOUBLE_EQ(r.ttft_s(0.0), 0.1);
  EXPECT_DOUBLE_EQ(r.tau(), 1.0 + 12.0 / 17.0);
  EXPECT_DOUBLE_EQ(r.mean_verify_length(), 32.0 / 17.0);
  EXPECT_EQ(nearest_rank_quantile({}, 0.5), 0.0);
  EXPECT_EQ(nearest_rank_quantile({4, 1, 3, 2}, 0.0), 1.0);
  EXPECT_EQ(nearest_rank_quantile({4, 1, 3, 2}, 1.0), 4.0);
  const nlohmann::json j = r.to_json();
  EXPECT_EQ(j["requests"], 4);
  EXPECT_DOUBLE_EQ(j["tpot_ms_p50"].get<double>(), 100.0);
}

// The echo variant's greedy text repeats the last prompt token (a bf16-robust oracle); the
// random one does not; unknown shapes are rejected.
TEST(SyntheticModel, EchoTextRepeatsTheLastPromptToken) {
  const auto echo = make_synthetic_model("tiny", 9, 4096, synthetic_text::echo);
  const auto be = tiny_backend(*echo, 1);
  sampling_params sp;
  sp.max_tokens = 12;
  const std::vector<int32_t> prompt = {3, 141, 59, 26, 5};
  const std::vector<int32_t> generated = generate(*be, nullptr, {}, prompt, sp).token_ids;
  EXPECT_EQ(generated, std::vector<int32_t>(12, 5));
  const auto random = make_synthetic_model("tiny", 9);
  const std::vector<int32_t> other = generate(*tiny_backend(*random, 1), nullptr, {}, prompt, sp).token_ids;
  EXPECT_NE(other, std::vector<int32_t>(12, 5));
  EXPECT_EQ(random->config.n_layer, 2);
  EXPECT_EQ(random->weights.layers.size(), 2u);
  EXPECT_THROW(make_synthetic_model("gpt-5"), invalid_argument_error);
}

std::string bench_load_binary() {
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe");
  const std::filesystem::path bin = exe.parent_path().parent_path() / "bench" / "bench_load";
  return std::filesystem::exists(bin) ? bin.string() : std::string();
}

int run_binary(const std::string& cmd, std::string& out) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(BenchLoad, TinySyntheticReplaySweepWritesJsonLines) {
  const std::string bin = bench_load_binary();
  if (bin.empty()) GTEST_SKIP() << "bench_load not built (cmake --build <dir> --target bench_load)";
  const std::string dir = std::filesystem::temp_directory_path() / ("bench_load_test_" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  const std::string traces = test::source_dir() + "/bench/traces/";
  const std::string jsonl = dir + "/load.jsonl";
  std::string out;
  const std::string cmd = bin + " --synthetic tiny --device cpu --threads 1 --concurrency 1,2 --requests 3 --seconds 0" +
                          " --max-tokens 12 --prompt-count 6 --prompt-tokens 10 --policies none,fixed,scheduled --warmup-waves 2" +
                          " --draft replay:" + traces + "smollm2_dspark2_g7.jsonl,layers=1 --mtp1 replay:" + traces +
                          "smollm2_mtp1_r7_g1.jsonl,layers=1 --sps-profile " + dir + "/sps.json --jsonl " + jsonl +
                          " --md " + dir + "/load.md";
  ASSERT_EQ(run_binary(cmd, out), 0) << out;
  std::ifstream f(jsonl);
  std::vector<nlohmann::json> rows;
  for (std::string l; std::getline(f, l);)
    if (!l.empty()) rows.push_back(nlohmann::json::parse(l));
  ASSERT_EQ(rows.size(), 8u) << "4 runs x 2 levels";
  const std::vector<std::string> labels = {"none", "none", "fixed", "fixed", "scheduled", "scheduled", "mtp1", "mtp1"};
  for (size_t i = 0; i < rows.size(); ++i) {
    const nlohmann::json& j = rows[i];
    EXPECT_EQ(j["label"], labels[i]);
    EXPECT_EQ(j["concurrency"], i % 2 == 0 ? 1 : 2);
    EXPECT_GE(j["requests"].get<int>(), 3);
    EXPECT_GT(j["aggregate_tokens_per_s"].get<double>(), 0.0);
    EXPECT_GT(j["per_user_tokens_per_s"].get<double>(), 0.0);
    EXPECT_GE(j["tpot_ms_p99"].get<double>(), j["tpot_ms_p50"].get<double>());
    EXPECT_EQ(j["oracle_misses"], 0) << "the CPU backend is batch-invariant";
    EXPECT_EQ(j["replayed_acceptance"], labels[i] != "none");
    EXPECT_EQ(j["mean_active"].get<double>(), j["concurrency"].get<double>());
    EXPECT_EQ(j["warmup_requests"], 2 * j["concurrency"].get<int>()) << "--warmup-waves 2";
  }
  EXPECT_EQ(rows[0]["mean_verify_length"], 0.0) << "plain decoding verifies no drafts";
  EXPECT_GT(rows[2]["tau"].get<double>(), 1.0) << "the DSpark trace accepts drafts";
  EXPECT_LE(rows[6]["mean_verify_length"].get<double>(), 1.0) << "MTP-1: one draft per round";
  std::ifstream md(dir + "/load.md");
  std::stringstream ss;
  ss << md.rdbuf();
  EXPECT_NE(ss.str().find("| mtp1 | 2 |"), std::string::npos) << ss.str();
  // The gated run reports the gate over the level and inside the measured window.
  const std::string gated_jsonl = dir + "/gated.jsonl";
  const std::string gated = bin + " --synthetic tiny --device cpu --threads 1 --concurrency 2 --requests 3 --seconds 0" +
                            " --max-tokens 12 --prompt-count 6 --prompt-tokens 10 --policies scheduled --warmup-waves 1" +
                            " --draft replay:" + traces + "smollm2_dspark2_g7.jsonl,layers=1 --spec-gate auto:pool=2" +
                            " --sps-profile " + dir + "/sps.json --jsonl " + gated_jsonl;
  out.clear();
  ASSERT_EQ(run_binary(gated, out), 0) << out;
  std::ifstream gf(gated_jsonl);
  std::string line;
  ASSERT_TRUE(std::getline(gf, line));
  const nlohmann::json g = nlohmann::json::parse(line);
  EXPECT_EQ(g["spec_gate"], "auto:pool=2");
  EXPECT_LE(g["gate_window_first_step"].get<int64_t>(), g["gate_window_last_step"].get<int64_t>());
  EXPECT_GT(g["gate_window_last_step"].get<int64_t>(), 0);
  EXPECT_LE(g["gate_window_closed_steps"].get<int64_t>(), g["gate_closed_steps"].get<int64_t>());
  EXPECT_LE(g["gate_window_closes"].get<int64_t>(), g["gate_closes"].get<int64_t>());
  EXPECT_GE(g["gate_idle_windows"].get<int64_t>(), 0);
  for (const nlohmann::json& w : g["gate_recent_windows"]) {
    EXPECT_GE(w["pooled"].get<int>(), 1);
    EXPECT_LE(w["pooled"].get<int>(), 2) << "auto:pool=2";
    EXPECT_GE(w["end_step"].get<int64_t>(), 1);
  }
  std::string err;
  EXPECT_EQ(run_binary(bin + " --synthetic tiny --policies psychic --draft replay:x", err), 2) << err;
  err.clear();
  EXPECT_EQ(run_binary(bin + " --synthetic nonesuch --policies none", err), 1) << err;
  err.clear();
  EXPECT_EQ(run_binary(bin + " --synthetic tiny --policies none --warmup-waves 0", err), 2) << err;
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace dspark

// `dspark eval --record-rounds FILE` as a user runs it, on a tiny Hugging Face model with the
// n-gram drafter: the trace has one line per request, its rounds and accepted drafts agree
// with the eval's own --json counts (all rounds but each request's last), and the option
// without a drafter is a usage error. Skips when the dspark binary is not built.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "models/drafters/round_trace.h"
#include "tests/engine/test_model_tiny.h"

namespace dspark {
namespace {

int run(const std::string& cmd, std::string& out) {
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return -1;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(EvalRecordRounds, TraceAgreesWithTheEvalCounts) {
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe");
  const std::filesystem::path bin = exe.parent_path().parent_path() / "services" / "dspark";
  if (!std::filesystem::exists(bin)) GTEST_SKIP() << "dspark binary not built (cmake --build <dir> --target dspark)";
  test::tiny_spec s;
  const std::string dir = test::write_tiny_hf(test::scratch_dir("rec_rounds"), s, test::make_tiny_weights(s));
  test::write_tiny_tokenizer(dir);
  const std::string prompts = dir + "/p.jsonl", trace = dir + "/trace.jsonl";
  std::ofstream(prompts) << "{\"turns\": [\"abcabc\"]}\n{\"turns\": [\"cabcab\"]}\n{\"turns\": [\"bcabca\"]}\n";
  const std::string base = bin.string() + " eval --model " + dir + " --prompts " + prompts +
                           " --max-tokens 12 --device cpu --threads 1 --json --record-rounds " + trace;
  std::string out;
  ASSERT_EQ(run(base + " --draft ngram --gamma 3 --batch 2 2>&1", out), 0) << out;
  const nlohmann::json j = nlohmann::json::parse(out.substr(out.find('{')));
  const nlohmann::json& d = j["datasets"]["p"];
  const round_trace t = read_round_trace(trace);
  EXPECT_EQ(t.header.drafter, "ngram");
  EXPECT_FALSE(t.header.has_confidence);
  EXPECT_EQ(t.header.gamma_max, 3);
  ASSERT_EQ(t.requests.size(), 3u);
  int64_t rounds = 0, accepted = 0, verified = 0;
  for (const trace_request& r : t.requests) {
    rounds += static_cast<int64_t>(r.rounds.size());
    for (const trace_round& x : r.rounds) {
      accepted += x.accepted;
      verified += x.verified;
    }
  }
  const int64_t steps = d["verify_steps"].get<int64_t>();
  EXPECT_LE(rounds, steps);
  EXPECT_GE(rounds, steps - 3) << "only each request's last round is missing";
  EXPECT_LE(verified, d["draft_tokens_verified"].get<int64_t>());
  EXPECT_LE(accepted, d["draft_tokens_accepted"].get<int64_t>());
  EXPECT_GE(accepted, d["draft_tokens_accepted"].get<int64_t>() - 3 * 3) << "at most one chain per request unseen";
  out.clear();
  EXPECT_EQ(run(base + " 2>&1", out), 2) << "--record-rounds without a drafter: " << out;
}

}  // namespace
}  // namespace dspark

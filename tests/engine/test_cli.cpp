// The dspark CLI as a user runs it: help, exit codes for bad arguments (2) and unloadable
// models (1), and the --json output shape on the real model. The binary is found next to this
// test's build directory (<build>/services/dspark); tests skip, naming it, when it is not built.
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "tests/engine/test_model_tiny.h"
#include "tests/test_support.h"

namespace dspark {
namespace {

namespace fs = std::filesystem;

std::string dspark_binary() {
  const fs::path exe = fs::read_symlink("/proc/self/exe");
  const fs::path bin = exe.parent_path().parent_path() / "services" / "dspark";
  return fs::exists(bin) ? bin.string() : std::string();
}

#define REQUIRE_CLI(var)                                                                    \
  const std::string var = dspark_binary();                                                 \
  if (var.empty()) GTEST_SKIP() << "dspark binary not built (cmake --build <dir> --target dspark)";

struct cli_result {
  int code = -1;
  std::string out, err;
};

std::string quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

cli_result run_cli(const std::string& bin, const std::vector<std::string>& args) {
  const std::string err_file = test::scratch_dir("cli") + "/stderr.txt";
  std::string cmd = quote(bin);
  for (const auto& a : args) cmd += " " + quote(a);
  cmd += " 2>" + quote(err_file);
  cli_result r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream f(err_file);
  std::stringstream ss;
  ss << f.rdbuf();
  r.err = ss.str();
  return r;
}

TEST(Cli, HelpListsTheCommands) {
  REQUIRE_CLI(bin);
  const auto r = run_cli(bin, {"--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("generate"), std::string::npos) << r.out;
  const auto g = run_cli(bin, {"generate", "--help"});
  EXPECT_EQ(g.code, 0);
  EXPECT_NE(g.out.find("--max-tokens"), std::string::npos) << g.out;
}

TEST(Cli, BadArgumentsExitWith2) {
  REQUIRE_CLI(bin);
  EXPECT_EQ(run_cli(bin, {}).code, 2);
  EXPECT_EQ(run_cli(bin, {"frobnicate"}).code, 2);
  EXPECT_EQ(run_cli(bin, {"generate", "--prompt", "hi"}).code, 2);  // no --model
  const auto unknown = run_cli(bin, {"generate", "--model", "m", "--prompt", "p", "--bogus"});
  EXPECT_EQ(unknown.code, 2);
  EXPECT_NE(unknown.err.find("--bogus"), std::string::npos) << unknown.err;
  const auto not_int = run_cli(bin, {"generate", "--model", "m", "--prompt", "p", "--max-tokens", "lots"});
  EXPECT_EQ(not_int.code, 2);
  EXPECT_NE(not_int.err.find("max-tokens"), std::string::npos) << not_int.err;
  const auto bad_t = run_cli(bin, {"generate", "--model", "m", "--prompt", "p", "--temperature", "-1"});
  EXPECT_EQ(bad_t.code, 2);
  EXPECT_NE(bad_t.err.find("[0, 100]"), std::string::npos) << bad_t.err;
  EXPECT_EQ(run_cli(bin, {"generate", "--model", "m", "--prompt", "p", "--top-p", "0"}).code, 2);
}

TEST(Cli, UnloadableModelExitsWith1) {
  REQUIRE_CLI(bin);
  const auto r = run_cli(bin, {"generate", "--model", "/nonexistent/x.gguf", "--prompt", "hi"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("/nonexistent/x.gguf"), std::string::npos) << r.err;
  const std::string junk = test::scratch_dir("cli_junk") + "/junk.gguf";
  std::ofstream(junk) << "not a gguf file at all";
  EXPECT_EQ(run_cli(bin, {"generate", "--model", junk, "--prompt", "hi"}).code, 1);
}

// The whole CLI path (HF folder, tokenizer.json, chat template, sampling, JSON) on a tiny
// random model, so it runs without the real model too. On the CPU (--device cpu), whose thread
// count must not change the tokens, even where a GPU would be the default.
TEST(Cli, JsonOutputOnATinyHfModel) {
  REQUIRE_CLI(bin);
  test::tiny_spec s;
  const std::string dir = test::write_tiny_hf(test::scratch_dir("cli_tiny"), s, test::make_tiny_weights(s));
  test::write_tiny_tokenizer(dir);
  const auto r = run_cli(bin, {"generate", "--model", dir, "--prompt", "abc", "--max-tokens", "6",
                               "--temperature", "0.9", "--seed", "3", "--threads", "1", "--device", "cpu", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["prompt_token_ids"], (std::vector<int32_t>{4, 5, 6}));
  EXPECT_LE(j["token_ids"].size(), 6u);
  EXPECT_TRUE(j["text"].is_string());
  EXPECT_EQ(j["stats"]["prompt_tokens"], 3);
  const auto again = run_cli(bin, {"generate", "--model", dir, "--prompt", "abc", "--max-tokens", "6",
                                   "--temperature", "0.9", "--seed", "3", "--threads", "2", "--device", "cpu", "--json"});
  ASSERT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(nlohmann::json::parse(again.out)["token_ids"], j["token_ids"]) << "same seed, same tokens";
  // Streaming mode prints the text on stdout and the speeds on stderr.
  const auto plain = run_cli(bin, {"generate", "--model", dir, "--prompt", "abc", "--max-tokens", "4",
                                   "--device", "cpu", "--threads", "1"});
  ASSERT_EQ(plain.code, 0) << plain.err;
  EXPECT_NE(plain.err.find("tok/s"), std::string::npos) << plain.err;
  EXPECT_NE(plain.err.find("cpu, 1 threads"), std::string::npos) << plain.err;
}

// bench-load: one JSON line per (policy, concurrency) with every measured request counted;
// bad lists are usage errors.
TEST(Cli, BenchLoadOnATinyHfModel) {
  REQUIRE_CLI(bin);
  test::tiny_spec s;
  const std::string dir = test::write_tiny_hf(test::scratch_dir("cli_load"), s, test::make_tiny_weights(s));
  test::write_tiny_tokenizer(dir);
  const std::string prompts = test::scratch_dir("cli_load") + "/p.jsonl";
  std::ofstream(prompts) << "{\"turns\": [\"abc\"]}\n{\"turns\": [\"cab\"]}\n{\"turns\": [\"bca\"]}\n";
  const auto r = run_cli(bin, {"bench-load", "--model", dir, "--prompts", prompts, "--concurrency", "1,3",
                               "--policies", "none,fixed", "--requests", "4", "--max-tokens", "5", "--draft", "ngram",
                               "--gamma", "2", "--threads", "1", "--device", "cpu", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::stringstream lines(r.out);
  std::vector<nlohmann::json> rows;
  for (std::string l; std::getline(lines, l);)
    if (!l.empty()) rows.push_back(nlohmann::json::parse(l));
  ASSERT_EQ(rows.size(), 4u) << r.out;
  const std::vector<std::pair<std::string, int>> want = {{"none", 1}, {"none", 3}, {"fixed:2", 1}, {"fixed:2", 3}};
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i]["policy"], want[i].first);
    EXPECT_EQ(rows[i]["concurrency"], want[i].second);
    EXPECT_EQ(rows[i]["requests"], std::max(4, 2 * want[i].second));  // at least 2 x concurrency
    EXPECT_GT(rows[i]["generated_tokens"].get<int64_t>(), 0);
    EXPECT_LE(rows[i]["generated_tokens"].get<int64_t>(), 5 * rows[i]["requests"].get<int64_t>());
    EXPECT_GT(rows[i]["aggregate_tokens_per_s"].get<double>(), 0.0);
  }
  EXPECT_EQ(rows[0]["mean_verify_length"], 0.0) << "plain decoding verifies no drafts";
  EXPECT_EQ(run_cli(bin, {"bench-load", "--model", dir, "--prompts", prompts, "--concurrency", "0"}).code, 2);
  EXPECT_EQ(run_cli(bin, {"bench-load", "--model", dir, "--prompts", prompts, "--concurrency", "x"}).code, 2);
  EXPECT_EQ(run_cli(bin, {"bench-load", "--model", dir, "--prompts", prompts, "--policies", "psychic",
                          "--device", "cpu", "--draft", "ngram"}).code,
            2);
}

// --device: an unknown name is a bad argument (2); cuda where the binary or the machine has
// none is a clear error (1), given before the model is read. Needs no GPU: where one is
// present, the missing model file is the error instead (also 1).
TEST(Cli, DeviceOption) {
  REQUIRE_CLI(bin);
  const auto bogus = run_cli(bin, {"generate", "--model", "m", "--prompt", "p", "--device", "bogus"});
  EXPECT_EQ(bogus.code, 2);
  EXPECT_NE(bogus.err.find("--device must be cpu or cuda"), std::string::npos) << bogus.err;
  EXPECT_EQ(run_cli(bin, {"bench-spec", "--model", "m", "--prompts", "p.jsonl", "--device", "tpu"}).code, 2);
  const std::vector<std::vector<std::string>> cuda_runs = {
      {"generate", "--model", "/nonexistent/x.gguf", "--prompt", "hi", "--device", "cuda"},
      {"bench-spec", "--model", "/nonexistent/x.gguf", "--prompts", "/nonexistent/p.jsonl", "--device", "cuda"},
  };
  for (const auto& args : cuda_runs) {
    const auto r = run_cli(bin, args);
    EXPECT_EQ(r.code, 1) << args[0] << ": " << r.err;
    if (!fs::exists("/dev/nvidia0")) {
      EXPECT_NE(r.err.find("--device cuda"), std::string::npos) << args[0] << ": " << r.err;
    }
  }
}

TEST(Cli, JsonOutputOnTheRealModel) {
  REQUIRE_CLI(bin);
  DSPARK_REQUIRE_MODEL(model);
  const auto r = run_cli(bin, {"generate", "--model", model, "--chat", "--prompt", "Say hello.",
                               "--max-tokens", "8", "--threads", "2", "--json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);  // stdout is exactly one JSON object
  ASSERT_TRUE(j.is_object());
  EXPECT_TRUE(j["text"].is_string());
  ASSERT_TRUE(j["token_ids"].is_array());
  EXPECT_GE(j["token_ids"].size(), 1u);
  EXPECT_LE(j["token_ids"].size(), 8u);
  ASSERT_TRUE(j["prompt_token_ids"].is_array());
  EXPECT_EQ(j["prompt_token_ids"][0], 1);  // <|im_start|> opens the chat template
  const auto& s = j["stats"];
  EXPECT_EQ(s["prompt_tokens"], j["prompt_token_ids"].size());
  EXPECT_GE(s["generated_tokens"].get<int>(), static_cast<int>(j["token_ids"].size()));
  EXPECT_GT(s["prefill_tok_s"].get<double>(), 0.0);
  EXPECT_TRUE(s["decode_tok_s"].is_number());
}

}  // namespace
}  // namespace dspark

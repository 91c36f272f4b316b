// generate(): max tokens, stop ids, stop strings spanning tokens (not emitted), held-back text
// flushed at the end, context limits, chunked prefill, seeds; plus the stop-string matcher.
#include <gtest/gtest.h>

#include <string>

#include "common/error.h"
#include "engine/cpu_backend.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "engine/stop_strings.h"
#include "models/tokenizer/tokenizer.h"
#include "tests/engine/test_model_tiny.h"
#include "tests/test_support.h"

namespace dspark {
namespace {

// A 64-token character vocabulary for the tiny model: 3 control tokens, a space, a-z, A-Z, 0-7.
tokenizer tiny_tokenizer() {
  tokenizer_spec spec;
  auto add = [&](const std::string& piece, token_kind kind) {
    spec.pieces.push_back(piece);
    spec.kinds.push_back(kind);
  };
  add("<unk>", token_kind::control);
  add("<s>", token_kind::control);
  add("</s>", token_kind::control);
  add("\xC4\xA0", token_kind::normal);  // "Ġ": byte-level spelling of a space
  for (char c = 'a'; c <= 'z'; ++c) add(std::string(1, c), token_kind::normal);
  for (char c = 'A'; c <= 'Z'; ++c) add(std::string(1, c), token_kind::normal);
  for (char c = '0'; c <= '7'; ++c) add(std::string(1, c), token_kind::normal);
  spec.bos_id = 1;
  spec.eos_id = 2;
  return tokenizer::from_spec(std::move(spec));
}

class Generate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    test::tiny_spec s;
    s.seed = 5;
    model_ = new model(load_model(
        test::write_tiny_hf(test::scratch_dir("generate"), s, test::make_tiny_weights(s)),
        model_load_options{.load_tokenizer = false}));
    tok_ = new tokenizer(tiny_tokenizer());
  }
  static void TearDownTestSuite() {
    delete model_;
    delete tok_;
  }
  static cpu_backend make_backend(int32_t n_ctx = 64) {
    cpu_backend_options o;
    o.n_threads = 2;
    o.n_ctx = n_ctx;
    o.kv_block_size = 8;
    o.max_tokens_per_step = 16;
    o.precision = matmul_precision::f32_activations;
    return cpu_backend(model_->config(), model_->weights(), o);
  }
  static generation_result run(backend& be, const sampling_params& p, std::vector<int32_t> stop_ids = {},
                               const token_callback& cb = {}, generate_options opt = {}) {
    return generate(be, tok_, stop_ids, prompt_, p, cb, opt);
  }
  static sampling_params greedy(int32_t max_tokens) {
    sampling_params p;
    p.max_tokens = max_tokens;
    return p;
  }
  static model* model_;
  static tokenizer* tok_;
  static const std::vector<int32_t> prompt_;
};
model* Generate::model_ = nullptr;
tokenizer* Generate::tok_ = nullptr;
const std::vector<int32_t> Generate::prompt_ = {1, 10, 20, 30, 40, 50, 3, 12};

TEST_F(Generate, StopsAtMaxTokens) {
  cpu_backend be = make_backend();
  std::string streamed;
  const auto r = run(be, greedy(12), {}, [&](int32_t, std::string_view t) { streamed += t; });
  EXPECT_EQ(r.token_ids.size(), 12u);
  EXPECT_EQ(r.finish, finish_reason::max_tokens);
  EXPECT_EQ(r.text, tok_->decode(r.token_ids, /*skip_special=*/true));
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(r.stats.prompt_tokens, 8);
  EXPECT_EQ(r.stats.generated_tokens, 12);
  EXPECT_EQ(be.limits().n_seq_max, 1);
  EXPECT_TRUE(be.open_sequence().has_value()) << "generate must free its sequence";
}

TEST_F(Generate, StopsAtAStopIdWithoutKeepingIt) {
  cpu_backend be = make_backend();
  const auto free_run = run(be, greedy(16));
  const int32_t stop = free_run.token_ids[5];
  const size_t first = std::find(free_run.token_ids.begin(), free_run.token_ids.end(), stop) -
                       free_run.token_ids.begin();
  const auto r = run(be, greedy(16), {stop});
  EXPECT_EQ(r.finish, finish_reason::stop_id);
  EXPECT_EQ(r.token_ids, std::vector<int32_t>(free_run.token_ids.begin(), free_run.token_ids.begin() + first));
  EXPECT_EQ(r.stats.generated_tokens, static_cast<int32_t>(first) + 1);
}

TEST_F(Generate, StopStringSpanningTokensIsNotEmitted) {
  cpu_backend be = make_backend();
  const auto free_run = run(be, greedy(20));
  // The text of tokens 6..8 (three tokens) as a stop string.
  const std::string stop = tok_->decode(std::vector<int32_t>(free_run.token_ids.begin() + 6,
                                                             free_run.token_ids.begin() + 9), true);
  ASSERT_GE(stop.size(), 2u) << "pick a prompt whose continuation has visible text";
  const std::string want = free_run.text.substr(0, free_run.text.find(stop));
  auto p = greedy(20);
  p.stop = {"never-produced", stop};
  std::string streamed;
  const auto r = run(be, p, {}, [&](int32_t, std::string_view t) {
    EXPECT_EQ(std::string(t).find(stop), std::string::npos);
    streamed += t;
  });
  EXPECT_EQ(r.finish, finish_reason::stop_string);
  EXPECT_EQ(r.text, want);
  EXPECT_EQ(streamed, want);
  EXPECT_LE(r.token_ids.size(), 9u);
}

TEST_F(Generate, HeldBackPrefixIsFlushedWhenNoStopCompletes) {
  cpu_backend be = make_backend();
  const auto free_run = run(be, greedy(10));
  ASSERT_FALSE(free_run.text.empty());
  auto p = greedy(10);
  p.stop = {free_run.text.substr(free_run.text.size() - 1) + "\x01"};  // its last char, then never
  const auto r = run(be, p);
  EXPECT_EQ(r.finish, finish_reason::max_tokens);
  EXPECT_EQ(r.text, free_run.text);
}

TEST_F(Generate, ChunkedPrefillGivesTheSameTokens) {
  cpu_backend be = make_backend();
  const auto whole = run(be, greedy(10));
  const auto chunked = run(be, greedy(10), {}, {}, generate_options{.prefill_chunk = 3});
  EXPECT_EQ(whole.token_ids, chunked.token_ids);
}

TEST_F(Generate, SeededSamplingReplays) {
  cpu_backend be = make_backend();
  sampling_params p = greedy(16);
  p.temperature = 1.0f;
  p.seed = 11;
  const auto a = run(be, p), b = run(be, p);
  EXPECT_EQ(a.token_ids, b.token_ids);
  p.seed = 12;
  EXPECT_NE(run(be, p).token_ids, a.token_ids);
}

TEST_F(Generate, ContextLimits) {
  cpu_backend be = make_backend(16);
  std::vector<int32_t> long_prompt(16, 5);
  EXPECT_THROW(generate(be, tok_, {}, long_prompt, greedy(4)), invalid_argument_error);
  long_prompt.resize(15);  // one free slot: one token fits, a second one would not
  const auto r = generate(be, tok_, {}, long_prompt, greedy(8));
  EXPECT_EQ(r.finish, finish_reason::context_full);
  EXPECT_EQ(r.token_ids.size(), 2u);  // sampled from positions 14 and 15
}

TEST_F(Generate, BadRequestsThrow) {
  cpu_backend be = make_backend();
  EXPECT_THROW(generate(be, tok_, {}, {}, greedy(4)), invalid_argument_error);
  sampling_params bad = greedy(4);
  bad.top_p = 2.0f;
  EXPECT_THROW(run(be, bad), invalid_argument_error);
  sampling_params with_stop = greedy(4);
  with_stop.stop = {"x"};
  EXPECT_THROW(generate(be, nullptr, {}, prompt_, with_stop), invalid_argument_error);
  EXPECT_TRUE(be.open_sequence().has_value()) << "failed requests must not leak sequences";
}

TEST(StopStrings, WorkedExampleFromTheHeader) {
  stop_string_matcher m({"\n\nUser"});
  auto s = m.push("Hi.\n");
  EXPECT_EQ(s.emit, "Hi.");
  s = m.push("\nUs");
  EXPECT_EQ(s.emit, "");
  s = m.push("er: x");
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.emit, "");
  EXPECT_EQ(m.push("more").emit, "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopStrings, EarliestMatchWinsAndOverlapsResolve) {
  stop_string_matcher m({"cd", "abc"});
  auto s = m.push("xxaab");
  EXPECT_EQ(s.emit, "xxa");  // "ab" could still become "abc"
  s = m.push("cd");  // "abcd": "abc" at 0 precedes "cd" at 2
  EXPECT_TRUE(s.stopped);
  EXPECT_EQ(s.emit, "");
  stop_string_matcher none({});
  EXPECT_EQ(none.push("abc").emit, "abc");
  stop_string_matcher tail({"zz"});
  EXPECT_EQ(tail.push("az").emit, "a");
  EXPECT_EQ(tail.flush(), "z");
}

TEST(GenerateRealModel, GreedyChatAnswerMentionsParis) {
  DSPARK_REQUIRE_MODEL(path);
  const model m = load_model(path);
  cpu_backend_options o;
  o.n_threads = 2;
  o.n_ctx = 256;
  cpu_backend be(m.config(), m.weights(), o);
  const auto ids = m.tokenizer().encode(
      "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n");
  sampling_params p;
  p.max_tokens = 24;
  const auto r = generate(m, be, ids, p);
  EXPECT_NE(r.text.find("Paris"), std::string::npos) << r.text;
  EXPECT_GT(r.stats.decode_tok_s, 0);
}

}  // namespace
}  // namespace dspark

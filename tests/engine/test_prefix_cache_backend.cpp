// The CPU backend with prefix caching: a prompt whose first blocks come from the prefix cache
// (published by an earlier request, still running or already freed) gets the same logits, bit
// for bit, as a cold prefill of the whole prompt on a fresh backend, and the same greedy
// continuation. On a tiny random Qwen2 model (always runs) and on SmolLM2-135M Q4_1 (skipped
// without the model file).
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/model.h"
#include "engine/spec/verify.h"
#include "models/tokenizer/tokenizer.h"
#include "tests/engine/test_model_tiny.h"
#include "tests/test_support.h"

namespace dspark {
namespace {

// What one request saw: every logit row it asked for (the prompt rows it forwarded, then one
// per decode step) and its greedy tokens.
struct request_trace {
  int32_t seq = -1;
  int32_t cached = 0;
  std::vector<std::vector<float>> prompt_rows;  // rows of positions [cached, prompt_len)
  std::vector<std::vector<float>> decode_rows;
  std::vector<int32_t> greedy;
};

// Prefills `prompt` on a new sequence in chunks of `chunk` (attaching a cached prefix first when
// `use_cache`, then publishing its blocks), asks for every prompt row's logits, and decodes
// n_gen greedy tokens one at a time. Leaves the sequence open (trace.seq).
request_trace run_request(backend& be, const std::vector<int32_t>& prompt, bool use_cache, int32_t chunk,
                          int32_t n_gen) {
  request_trace t;
  t.seq = *be.open_sequence();
  if (use_cache) t.cached = be.attach_prefix(t.seq, prompt);
  EXPECT_EQ(be.sequence_length(t.seq), t.cached);
  const int64_t V = be.limits().n_vocab;
  for (size_t i = static_cast<size_t>(t.cached); i < prompt.size(); i += static_cast<size_t>(chunk)) {
    const auto n = static_cast<int32_t>(std::min(prompt.size() - i, static_cast<size_t>(chunk)));
    const batch_sequence s{t.seq, n, n};
    const forward_output out = be.forward({std::span<const int32_t>(prompt).subspan(i, n), {&s, 1}, {}});
    EXPECT_EQ(out.status, forward_status::ok);
    for (int32_t r = 0; r < n; ++r) t.prompt_rows.emplace_back(out.logits + r * V, out.logits + (r + 1) * V);
  }
  if (use_cache) be.cache_prefix(t.seq, prompt);
  std::vector<float> last = t.prompt_rows.back();
  for (int32_t g = 0; g < n_gen; ++g) {
    const int32_t tok = argmax_index(last);
    t.greedy.push_back(tok);
    const batch_sequence s{t.seq, 1, 1};
    const forward_output out = be.forward({std::span<const int32_t>(&tok, 1), {&s, 1}, {}});
    EXPECT_EQ(out.status, forward_status::ok);
    last.assign(out.logits, out.logits + V);
    t.decode_rows.push_back(last);
  }
  return t;
}

bool bit_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// `cached` (a prompt with a cached prefix) against `cold` (the same prompt prefilled whole): the
// cold rows from the cached position on, then every decode row, bitwise.
void expect_same(const request_trace& cached, const request_trace& cold) {
  ASSERT_EQ(cold.cached, 0);
  ASSERT_EQ(cached.prompt_rows.size() + static_cast<size_t>(cached.cached), cold.prompt_rows.size());
  for (size_t r = 0; r < cached.prompt_rows.size(); ++r)
    EXPECT_TRUE(bit_equal(cached.prompt_rows[r], cold.prompt_rows[r + static_cast<size_t>(cached.cached)]))
        << "prompt position " << r + static_cast<size_t>(cached.cached);
  EXPECT_EQ(cached.greedy, cold.greedy);
  ASSERT_EQ(cached.decode_rows.size(), cold.decode_rows.size());
  for (size_t r = 0; r < cold.decode_rows.size(); ++r)
    EXPECT_TRUE(bit_equal(cached.decode_rows[r], cold.decode_rows[r])) << "decode step " << r;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<int32_t> pattern(size_t n, int32_t n_vocab, int32_t salt) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 37 + 11 + salt * 13) % n_vocab);
  return t;
}

cpu_backend_options backend_options(int32_t n_seq, int32_t n_ctx, int32_t block, int32_t max_tokens,
                                    matmul_precision p) {
  return {.n_threads = 2, .n_seq_max = n_seq, .n_ctx = n_ctx, .max_tokens_per_step = max_tokens,
          .kv_block_size = block, .precision = p};
}

class PrefixCacheTiny : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    test::tiny_spec s;
    s.arch = "Qwen2ForCausalLM";  // QKV biases: every code path
    s.n_ctx = 128;
    model_ = new model(load_model(test::write_tiny_hf(test::scratch_dir("prefix_cache"), s, test::make_tiny_weights(s)),
                                  {.load_tokenizer = false}));
  }
  static void TearDownTestSuite() { delete model_; }
  static cpu_backend_options options(matmul_precision p) { return backend_options(3, 96, 4, 64, p); }
  static model* model_;
};
model* PrefixCacheTiny::model_ = nullptr;

TEST_F(PrefixCacheTiny, CachedPrefixGivesColdPrefillLogitsBitForBit) {
  for (const matmul_precision p : {matmul_precision::f32_activations, matmul_precision::q8_activations}) {
    SCOPED_TRACE(p == matmul_precision::f32_activations ? "f32 activations" : "q8 activations");
    const auto shared = pattern(22, 64, 1);  // 5 full blocks of 4 + 2 tokens
    const auto a = concat(shared, pattern(6, 64, 2)), b = concat(shared, pattern(9, 64, 3));
    cpu_backend be(model_->config(), model_->weights(), options(p));
    const request_trace ta = run_request(be, a, true, 64, 4);  // publishes, stays open (running)
    EXPECT_EQ(ta.cached, 0);
    const request_trace tb = run_request(be, b, true, 64, 12);
    EXPECT_EQ(tb.cached, 20);
    EXPECT_GT(be.prefix_stats().shared_refs, 0);
    cpu_backend fresh(model_->config(), model_->weights(), options(p));
    const request_trace cold = run_request(fresh, b, false, 64, 12);
    expect_same(tb, cold);

    // Both freed: the blocks stay cached (evictable) and serve a third request, chunked this time.
    be.free_sequence(ta.seq);
    be.free_sequence(tb.seq);
    EXPECT_EQ(be.kv().free_blocks(), be.kv().params().n_blocks);
    const auto c = concat(shared, pattern(5, 64, 4));
    const request_trace tc = run_request(be, c, true, 3, 10);
    EXPECT_EQ(tc.cached, 20);
    const request_trace cold_c = run_request(fresh, c, false, 7, 10);
    expect_same(tc, cold_c);
  }
}

TEST_F(PrefixCacheTiny, IdenticalPromptRecomputesOnlyItsLastBlock) {
  cpu_backend be(model_->config(), model_->weights(), options(matmul_precision::q8_activations));
  const auto prompt = pattern(24, 64, 5);  // exactly 6 blocks
  const request_trace first = run_request(be, prompt, true, 64, 6);
  const request_trace again = run_request(be, prompt, true, 64, 6);
  EXPECT_EQ(again.cached, 20);  // the block holding the last token is forwarded again
  expect_same(again, first);
}

TEST_F(PrefixCacheTiny, GeneratedTokensPublishedAtTheEndServeAFollowUpTurn) {
  // Turn 1: prompt + 14 greedy tokens, then the whole sequence published (what spec_decoder's
  // finish does). Turn 2 repeats it and adds a question: the generated part is reused too.
  cpu_backend be(model_->config(), model_->weights(), options(matmul_precision::q8_activations));
  const auto prompt = pattern(10, 64, 6);
  const request_trace turn1 = run_request(be, prompt, true, 64, 14);
  const auto history = concat(prompt, turn1.greedy);  // run_request forwarded every greedy token
  be.cache_prefix(turn1.seq, history);
  be.free_sequence(turn1.seq);
  const auto turn2 = concat(history, pattern(5, 64, 7));
  const request_trace t2 = run_request(be, turn2, true, 64, 8);
  EXPECT_EQ(t2.cached, 24);  // 24 history tokens: 6 full blocks
  cpu_backend fresh(model_->config(), model_->weights(), options(matmul_precision::q8_activations));
  expect_same(t2, run_request(fresh, turn2, false, 64, 8));
}

TEST(PrefixCacheSmolLM2, SharedSystemPromptGivesColdLogitsAndGreedyTokens) {
  DSPARK_REQUIRE_MODEL(path);
  const model m = load_model(path);
  const tokenizer& tok = m.tokenizer();
  const std::string system =
      "<|im_start|>system\nYou are a careful assistant for a railway company. Answer briefly, cite the "
      "timetable when you can, and never invent a connection. If a question is not about trains, say so "
      "politely and offer the help you can give.<|im_end|>\n";
  const auto shared = tok.encode(system);
  ASSERT_GE(shared.size(), 48u);
  const auto a = concat(shared, tok.encode("<|im_start|>user\nWhen does the first train leave?<|im_end|>\n<|im_start|>assistant\n"));
  const auto b = concat(shared, tok.encode("<|im_start|>user\nName three rivers in Europe.<|im_end|>\n<|im_start|>assistant\n"));
  const cpu_backend_options o = backend_options(2, 256, 16, 128, matmul_precision::q8_activations);
  cpu_backend be(m.config(), m.weights(), o);
  const request_trace ta = run_request(be, a, true, 128, 1);
  const request_trace tb = run_request(be, b, true, 128, 16);
  EXPECT_EQ(tb.cached, static_cast<int32_t>(shared.size() / 16 * 16));
  cpu_backend fresh(m.config(), m.weights(), o);
  expect_same(tb, run_request(fresh, b, false, 128, 16));
}

}  // namespace
}  // namespace dspark

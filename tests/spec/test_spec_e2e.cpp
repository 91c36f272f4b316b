// End to end on the real model (skips without it, or without the shared prompt sets): at
// temperature 0 speculative decoding is token-identical to plain generate() on 100 prompts of
// the evaluation sets (32 tokens each), for the n-gram and layer-skip drafters with chains of 1,
// 3 and 7 drafts, 8 requests per ragged verify forward. (Fixed gammas 1, 3, 7 per run are
// also covered on the tiny model in test_spec_tiny.cpp.) DSPARK_SPEC_E2E_PROMPTS=N runs fewer.
//
// Precondition, checked first for both activation precisions: a row of a multi-token verify
// forward has bitwise the logits of the same token decoded alone. Only then can greedy
// verification reproduce plain decoding exactly. The lossless runs use the default (q8)
// precision, the one `dspark generate` uses.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <cstdio>
#include <string>

#include "e2e_support.h"
#include "engine/generator.h"
#include "engine/spec/policy.h"
#include "models/drafters/layerskip_drafter.h"
#include "models/drafters/ngram_drafter.h"

namespace dspark {
namespace {

using test::shared_model;

constexpr int32_t kBatch = 8;
constexpr int32_t kLayerSkipK = 8;

cpu_backend_options default_options(int32_t n_seq) { return test::e2e_backend_options(n_seq); }

// Max |difference| between the logits of 5 tokens fed one by one and in one forward.
double row_invariance_gap(const model& m, matmul_precision prec) {
  cpu_backend_options o = test::e2e_backend_options(2);
  o.precision = prec;
  cpu_backend be(m.config(), m.weights(), o);
  const std::vector<int32_t> prompt = encode_chat_prompt(m.tokenizer(), "Name a prime number.");
  const std::vector<int32_t> ext = {504, 3575, 282, 4649, 314};
  const int64_t nv = be.limits().n_vocab;
  std::vector<float> one, all;
  for (int pass = 0; pass < 2; ++pass) {
    const int32_t seq = *be.open_sequence();
    batch_sequence s{seq, static_cast<int32_t>(prompt.size()), 1};
    forward_batch fb;
    fb.tokens = prompt;
    fb.seqs = std::span<const batch_sequence>(&s, 1);
    be.forward(fb);
    if (pass == 0) {
      for (const int32_t& t : ext) {
        s = {seq, 1, 1};
        fb.tokens = std::span<const int32_t>(&t, 1);
        const forward_output out = be.forward(fb);
        one.insert(one.end(), out.logits, out.logits + nv);
      }
    } else {
      s = {seq, 5, 5};
      fb.tokens = ext;
      const forward_output out = be.forward(fb);
      all.assign(out.logits, out.logits + 5 * nv);
    }
    be.free_sequence(seq);
  }
  double gap = 0.0;
  for (size_t i = 0; i < one.size(); ++i) gap = std::max(gap, static_cast<double>(std::fabs(one[i] - all[i])));
  return gap;
}

TEST(SpecE2E, VerifyRowsEqualDecodeRowsF32) {
  DSPARK_REQUIRE_MODEL(path);
  EXPECT_EQ(row_invariance_gap(*shared_model(), matmul_precision::f32_activations), 0.0);
}

TEST(SpecE2E, VerifyRowsEqualDecodeRowsQ8) {
  DSPARK_REQUIRE_MODEL(path);
  EXPECT_EQ(row_invariance_gap(*shared_model(), matmul_precision::q8_activations), 0.0);
}

// Verifies chains of 1, 3 and 7 drafts in turn: request r's chain in step s has length
// gammas[(s + r) % 3], so every request of the batch sees every length, and a batch mixes
// lengths in one ragged forward (one decoder run covers all three gammas on every prompt).
class cycling_gamma_policy final : public spec_policy {
 public:
  std::string name() const override { return "cycle:1,3,7"; }
  int32_t draft_budget() const override { return 7; }
  void plan(std::span<const policy_request> batch, std::span<int32_t> n_verify) override {
    static constexpr int32_t kGammas[3] = {1, 3, 7};
    for (size_t i = 0; i < batch.size(); ++i) {
      const int32_t g = kGammas[(step_ + static_cast<uint64_t>(batch[i].slot)) % 3];
      n_verify[i] = std::min({g, static_cast<int32_t>(batch[i].confidence.size()), batch[i].max_verify});
    }
    ++step_;
  }

 private:
  uint64_t step_ = 0;
};

TEST(SpecE2E, GreedyIsTokenIdenticalToPlainDecoding) {
  DSPARK_REQUIRE_MODEL(path);
  if (test::prompt_data_dir().empty())
    GTEST_SKIP() << "prompt sets not found at $DSPARK_SOURCE_DIR/../shared/data";
  const model& m = *shared_model();
  const size_t n_prompts = test::env_count("DSPARK_SPEC_E2E_PROMPTS", 100);
  const auto prompts = test::mixed_prompts(m.tokenizer(), n_prompts, 80);
  ASSERT_EQ(prompts.size(), n_prompts);
  cpu_backend be(m.config(), m.weights(), default_options(kBatch));
  sampling_params sp;
  sp.max_tokens = 32;
  const auto t0 = std::chrono::steady_clock::now();
  const std::clock_t c0 = std::clock();
  std::vector<generation_result> plain;
  for (const auto& p : prompts) plain.push_back(generate(m, be, p, sp));
  std::printf("plain: %zu prompts x %d tokens in %.1fs (%.1f CPU s)\n", prompts.size(), sp.max_tokens,
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(),
              double(std::clock() - c0) / CLOCKS_PER_SEC);
  std::fflush(stdout);
  for (const char* kind : {"ngram", "layerskip", "layerskip_shared"}) {
    std::unique_ptr<drafter> d;
    if (std::string(kind) == "ngram") {
      d = std::make_unique<ngram_drafter>(ngram_drafter_params{.min_n = 1, .max_n = 4, .max_slots = kBatch});
    } else if (std::string(kind) == "layerskip_shared") {  // drafting on the target's own KV
      d = std::make_unique<layerskip_drafter>(
          m.config(), m.weights(),
          layerskip_drafter_params{.n_layers = kLayerSkipK, .max_slots = kBatch, .sampled = true, .stop_below = 0.2f,
                                   .shared_target = &be},
          [](const model_config& c, const llama_weights& w) { return std::make_unique<cpu_backend>(c, w, default_options(kBatch)); });
    } else {
      d = std::make_unique<layerskip_drafter>(
          m.config(), m.weights(), layerskip_drafter_params{.n_layers = kLayerSkipK, .max_slots = kBatch, .sampled = true, .stop_below = 0.2f},
          [](const model_config& c, const llama_weights& w) { return std::make_unique<cpu_backend>(c, w, default_options(kBatch)); });
    }
    cycling_gamma_policy pol;
    spec_decoder dec(be, d.get(), pol, &m.tokenizer(), m.stop_ids(), {.max_requests = kBatch});
    const auto t1 = std::chrono::steady_clock::now();
    const std::clock_t c1 = std::clock();
    const std::vector<spec_result> res = spec_generate_all(dec, prompts, sp, /*per_prompt_seed=*/false);
    int identical = 0;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const bool same = res[i].gen.token_ids == plain[i].token_ids && res[i].gen.text == plain[i].text &&
                        res[i].gen.finish == plain[i].finish;
      identical += same;
      EXPECT_TRUE(same) << kind << " prompt " << i;
    }
    const spec_metrics& mt = dec.metrics();
    std::printf("%s (gamma 1/3/7 in turn, batch %d): %d/%zu identical, tau %.3f, accepted %lld of %lld drafts, "
                "%lld verify steps, %.1fs (%.1f CPU s)\n",
                kind, kBatch, identical, prompts.size(), mt.acceptance_length(),
                static_cast<long long>(mt.draft_tokens_accepted()), static_cast<long long>(mt.draft_tokens_verified()),
                static_cast<long long>(mt.verify_steps()),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count(),
                double(std::clock() - c1) / CLOCKS_PER_SEC);
    std::fflush(stdout);
    EXPECT_GT(mt.draft_tokens_accepted(), 0);  // accepted chains (and their rollbacks) were exercised
    EXPECT_GT(mt.verified_at(0), 0);
    if (std::string(kind) == "ngram") {
      for (int32_t k : {2, 6}) EXPECT_GT(mt.verified_at(k), 0) << "chain length " << k + 1 << " never verified";
    }
  }
}

}  // namespace
}  // namespace dspark

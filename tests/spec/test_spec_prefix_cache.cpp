// spec_decoder with prefix caching (spec_decoder_options::prefix_cache): requests sharing a
// 40-token prefix decode exactly as plain generate() on a cold backend, the later ones report
// the prefix as cached (a running request's blocks and a finished one's), a follow-up turn reuses
// the generated tokens too, and every block comes back when the requests end. On the tiny model
// (always) with no drafter, n-gram and layer-skip on the target's own KV; on SmolLM2 (skipped
// without the model) with the n-gram drafter.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/generator.h"
#include "engine/model.h"
#include "engine/spec/policy.h"
#include "engine/spec/spec_decoder.h"
#include "models/drafters/layerskip_drafter.h"
#include "models/drafters/ngram_drafter.h"
#include "models/tokenizer/tokenizer.h"
#include "tests/caps_only_drafter.h"
#include "tests/test_support.h"
#include "tiny_model.h"

namespace dspark {
namespace {

using test::tiny_model;

cpu_backend_options cache_options(int32_t n_seq) {
  cpu_backend_options o = tiny_model::options(n_seq);
  o.n_ctx = 128;
  o.kv_block_size = 4;
  return o;
}

std::vector<int32_t> with_suffix(const std::vector<int32_t>& prefix, std::vector<int32_t> suffix) {
  std::vector<int32_t> p = prefix;
  p.insert(p.end(), suffix.begin(), suffix.end());
  return p;
}


TEST(SpecPrefixCache, SharedPrefixEqualsPlainGenerateAndReportsCachedTokens) {
  tiny_model tm(/*n_vocab=*/16, /*n_layer=*/3, /*seed=*/9);
  std::vector<int32_t> shared;
  for (int32_t i = 0; i < 40; ++i) shared.push_back((i * 7 + 3) % 16);
  const std::vector<std::vector<int32_t>> prompts = {with_suffix(shared, {1, 2, 3}), with_suffix(shared, {4, 5}),
                                                     with_suffix(shared, {6, 7, 8, 9})};
  sampling_params sp;
  sp.max_tokens = 24;
  cpu_backend cold(tm.cfg, tm.w, cache_options(1));
  std::vector<std::vector<int32_t>> plain;
  for (const auto& p : prompts) plain.push_back(generate(cold, nullptr, {}, p, sp).token_ids);

  for (int kind = 0; kind < 3; ++kind) {
    cpu_backend be(tm.cfg, tm.w, cache_options(2));  // an empty cache for every drafter
    ngram_drafter ng({.min_n = 1, .max_n = 3, .max_slots = 2});
    layerskip_drafter ls(tm.cfg, tm.w, {.n_layers = 2, .max_slots = 2, .sampled = true, .shared_target = &be},
                         [](const model_config& c, const llama_weights& w) {
                           return std::make_unique<cpu_backend>(c, w, cache_options(2));
                         });
    drafter* d = kind == 0 ? nullptr : kind == 1 ? static_cast<drafter*>(&ng) : static_cast<drafter*>(&ls);
    const std::string name = d ? d->caps().name : "plain";
    fixed_gamma_policy pol(d ? 3 : 0);
    spec_decoder dec(be, d, pol, nullptr, {}, {.max_requests = 2, .prefix_cache = true});
    ASSERT_TRUE(dec.prefix_cache());
    const int32_t free0 = be.kv().free_blocks();

    const int32_t a = dec.add(prompts[0], sp);
    dec.step();  // a prefilled, its 10 full prompt blocks published
    const int32_t b = dec.add(prompts[1], sp);  // joins while a decodes: shares a's blocks
    EXPECT_GT(be.prefix_stats().shared_refs, 0) << name;
    dec.run();
    const spec_result ra = dec.take(a), rb = dec.take(b);
    EXPECT_EQ(ra.gen.token_ids, plain[0]) << name;
    EXPECT_EQ(rb.gen.token_ids, plain[1]) << name;
    EXPECT_EQ(ra.gen.stats.cached_tokens, 0) << name;
    EXPECT_EQ(rb.gen.stats.cached_tokens, 40) << name;

    // After both finished: their blocks wait in the cache, evictable, and serve a third prompt.
    EXPECT_EQ(be.kv().free_blocks(), free0) << name;
    const int32_t c = dec.add(prompts[2], sp);
    dec.run();
    const spec_result rc = dec.take(c);
    EXPECT_EQ(rc.gen.token_ids, plain[2]) << name;
    EXPECT_EQ(rc.gen.stats.cached_tokens, 40) << name;

    // A follow-up turn: a's prompt, its answer and a new question. finish() published the
    // answer's verified blocks, so more than the prompt is reused.
    const auto turn2 = with_suffix(with_suffix(prompts[0], ra.gen.token_ids), {2, 4, 6});
    const int32_t t2 = dec.add(turn2, sp);
    dec.run();
    const spec_result r2 = dec.take(t2);
    EXPECT_EQ(r2.gen.token_ids, generate(cold, nullptr, {}, turn2, sp).token_ids) << name;
    EXPECT_GT(r2.gen.stats.cached_tokens, 44) << name;
    EXPECT_LE(r2.gen.stats.cached_tokens, static_cast<int32_t>(turn2.size()) - 1) << name;
    EXPECT_EQ(r2.gen.stats.cached_tokens % 4, 0) << name;

    const prefix_cache_stats& st = be.prefix_stats();
    EXPECT_EQ(st.queries, 4) << name;
    EXPECT_EQ(st.hits, 3) << name;
    EXPECT_EQ(st.hit_tokens, 80 + r2.gen.stats.cached_tokens) << name;
    EXPECT_EQ(st.shared_refs, 0) << name;
    EXPECT_EQ(be.kv().free_blocks(), free0) << name;  // cached blocks count as free
  }
}

TEST(SpecPrefixCache, OffByDefaultAndForFeatureDrafters) {
  tiny_model tm(/*n_vocab=*/16, /*n_layer=*/3, /*seed=*/9);
  cpu_backend be(tm.cfg, tm.w, cache_options(2));
  const std::vector<int32_t> p = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
  sampling_params sp;
  sp.max_tokens = 4;
  fixed_gamma_policy none(0);
  {
    spec_decoder dec(be, nullptr, none, nullptr, {});
    EXPECT_FALSE(dec.prefix_cache());
    for (int i = 0; i < 2; ++i) {
      const int32_t id = dec.add(p, sp);
      dec.run();
      EXPECT_EQ(dec.take(id).gen.stats.cached_tokens, 0);
    }
  }
  EXPECT_EQ(be.prefix_stats().queries, 0);
  EXPECT_EQ(be.prefix_stats().cached_blocks, 0);
  // A drafter that reads target features: prefix caching must stay off for it.
  test::caps_only_drafter fd({.name = "features", .capture_layers = {0}});
  fixed_gamma_policy pol(2);
  spec_decoder dec(be, &fd, pol, nullptr, {}, {.prefix_cache = true});
  EXPECT_FALSE(dec.prefix_cache());  // it needs every prompt row's features
}

TEST(SpecPrefixCache, SmolLM2SharedSystemPromptEqualsPlainDecoding) {
  DSPARK_REQUIRE_MODEL(path);
  const model m = load_model(path);
  const tokenizer& tok = m.tokenizer();
  const std::vector<int32_t> system = tok.encode(
      "<|im_start|>system\nYou are a helpful assistant who answers in one short paragraph and names "
      "the sources of every figure you give. Keep a friendly tone, avoid jargon, and when a question is "
      "ambiguous ask one clarifying question first.<|im_end|>\n");
  ASSERT_GE(system.size(), 40u);
  const std::vector<int32_t> shared(system.begin(), system.begin() + 40);
  const std::vector<std::vector<int32_t>> prompts = {
      with_suffix(shared, tok.encode("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")),
      with_suffix(shared, tok.encode("<|im_start|>user\nName two planets.<|im_end|>\n<|im_start|>assistant\n"))};
  sampling_params sp;
  sp.max_tokens = 24;
  cpu_backend_options o;
  o.n_threads = 2;
  o.n_seq_max = 2;
  o.n_ctx = 512;
  o.kv_block_size = 16;
  cpu_backend cold(m.config(), m.weights(), o);
  cpu_backend be(m.config(), m.weights(), o);
  ngram_drafter ng({.min_n = 1, .max_n = 3, .max_slots = 2});
  fixed_gamma_policy pol(4);
  spec_decoder dec(be, &ng, pol, &tok, m.stop_ids(), {.max_requests = 2, .prefix_cache = true});
  const int32_t a = dec.add(prompts[0], sp);
  dec.step();
  const int32_t b = dec.add(prompts[1], sp);
  dec.run();
  const spec_result ra = dec.take(a), rb = dec.take(b);
  EXPECT_EQ(ra.gen.token_ids, generate(m, cold, prompts[0], sp).token_ids);
  EXPECT_EQ(rb.gen.token_ids, generate(m, cold, prompts[1], sp).token_ids);
  EXPECT_EQ(ra.gen.stats.cached_tokens, 0);
  EXPECT_EQ(rb.gen.stats.cached_tokens, 32);  // 40 shared tokens: two full blocks of 16
}

}  // namespace
}  // namespace dspark

// The speculative loop end to end on a tiny in-memory model (always runs, no files needed):
//   - at temperature > 0 the generated tokens follow the target's exact joint distribution
//     (chi-square over 2e4 generations, reject at p < 1e-3), with a negative control: the same
//     counts against the unfiltered distribution (top_k ignored) must be rejected;
//   - a layer-skip drafter using every layer IS the target: 100% acceptance;
//   - at temperature 0 the output equals plain generate() token for token;
//   - cancelling frees every KV block (target and draft caches); bad parameters are rejected.
#include <gtest/gtest.h>

#include <cstdio>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "engine/generator.h"
#include "engine/spec/policy.h"
#include "engine/spec/spec_decoder.h"
#include "models/drafters/layerskip_drafter.h"
#include "models/drafters/ngram_drafter.h"
#include "forwarding_backend.h"
#include "stats.h"
#include "tiny_model.h"

namespace dspark {
namespace {

using test::tiny_model;

draft_backend_factory tiny_factory(int32_t n_seq) {
  return [n_seq](const model_config& c, const llama_weights& w) {
    return std::make_unique<cpu_backend>(c, w, tiny_model::options(n_seq));
  };
}

// Target distribution of the next token after `ctx`, with the request's filters.
std::vector<float> target_probs(backend& be, const sampling_params& sp, const std::vector<int32_t>& ctx) {
  const int32_t seq = *be.open_sequence();
  const batch_sequence s{seq, static_cast<int32_t>(ctx.size()), 1};
  forward_batch fb;
  fb.tokens = ctx;
  fb.seqs = std::span<const batch_sequence>(&s, 1);
  const forward_output o = be.forward(fb);
  std::vector<float> p(static_cast<size_t>(be.limits().n_vocab));
  sampler(be.limits().n_vocab, sp).distribution(o.logits, p.data());
  be.free_sequence(seq);
  return p;
}

// Exact probability of every 3-token continuation of `prompt` (index x0 * V^2 + x1 * V + x2).
std::vector<double> exact_joint3(backend& be, const sampling_params& sp, const std::vector<int32_t>& prompt) {
  const int64_t V = be.limits().n_vocab;
  std::vector<double> joint(static_cast<size_t>(V * V * V), 0.0);
  const std::vector<float> p0 = target_probs(be, sp, prompt);
  for (int32_t a = 0; a < V; ++a) {
    if (p0[a] == 0.0f) continue;
    std::vector<int32_t> c1 = prompt;
    c1.push_back(a);
    const std::vector<float> p1 = target_probs(be, sp, c1);
    for (int32_t b = 0; b < V; ++b) {
      if (p1[b] == 0.0f) continue;
      std::vector<int32_t> c2 = c1;
      c2.push_back(b);
      const std::vector<float> p2 = target_probs(be, sp, c2);
      for (int32_t c = 0; c < V; ++c) joint[static_cast<size_t>((a * V + b) * V + c)] = double(p0[a]) * p1[b] * p2[c];
    }
  }
  return joint;
}

constexpr double kAlpha = 1e-3;

struct sampled_case {
  const char* drafter;  // "ngram", "layerskip", "layerskip_shared"
  int gamma;
};

class SpecTinySampled : public ::testing::TestWithParam<sampled_case> {};

TEST_P(SpecTinySampled, GeneratedTokensFollowTheTarget) {
  const sampled_case c = GetParam();
  tiny_model tm;
  cpu_backend be(tm.cfg, tm.w, tiny_model::options(2));
  const std::vector<int32_t> prompt = {1, 2, 3, 1, 2};
  sampling_params sp;
  sp.temperature = 1.0f;
  sp.top_k = 4;  // filtering is part of the target distribution
  sp.max_tokens = 3;
  std::unique_ptr<drafter> d;
  if (std::string(c.drafter) == "ngram")
    d = std::make_unique<ngram_drafter>(ngram_drafter_params{.min_n = 1, .max_n = 2, .max_slots = 1});
  else if (std::string(c.drafter) == "layerskip_shared")  // drafting on the target's own KV
    d = std::make_unique<layerskip_drafter>(
        tm.cfg, tm.w, layerskip_drafter_params{.n_layers = 1, .max_slots = 1, .sampled = true, .shared_target = &be},
        tiny_factory(1));
  else
    d = std::make_unique<layerskip_drafter>(tm.cfg, tm.w, layerskip_drafter_params{.n_layers = 1, .max_slots = 1, .sampled = true},
                                            tiny_factory(1));
  fixed_gamma_policy pol(c.gamma);
  const int64_t V = tm.cfg.n_vocab;
  std::vector<int64_t> counts(static_cast<size_t>(V * V * V), 0);
  spec_decoder dec(be, d.get(), pol, nullptr, {});
  const int n = 20000;
  for (int i = 0; i < n; ++i) {
    sp.seed = 5000 + static_cast<uint64_t>(i);
    const int32_t id = dec.add(prompt, sp);
    dec.run();
    const spec_result r = dec.take(id);
    ASSERT_EQ(r.gen.token_ids.size(), 3u);
    const auto& t = r.gen.token_ids;
    ++counts[static_cast<size_t>((t[0] * V + t[1]) * V + t[2])];
  }
  const spec_metrics& m = dec.metrics();
  const test::chi_square_result chi = test::chi_square_test(counts, exact_joint3(be, sp, prompt));
  std::printf("%s gamma %d: chi2 %.1f dof %d p %.3f, tau %.2f, drafts accepted %lld / %lld\n", c.drafter, c.gamma,
              chi.stat, chi.dof, chi.p_value, m.acceptance_length(), static_cast<long long>(m.draft_tokens_accepted()),
              static_cast<long long>(m.draft_tokens_verified()));
  EXPECT_GE(chi.p_value, kAlpha);
  EXPECT_GT(m.draft_tokens_verified(), 0);  // the verifier was exercised, not only prefill sampling
  // Negative control: the unfiltered distribution (top_k off) is not what was sampled.
  sampling_params unfiltered = sp;
  unfiltered.top_k = 0;
  const test::chi_square_result wrong = test::chi_square_test(counts, exact_joint3(be, unfiltered, prompt));
  EXPECT_LT(wrong.p_value, kAlpha) << "chi2 " << wrong.stat;
}

INSTANTIATE_TEST_SUITE_P(Drafters, SpecTinySampled,
                         ::testing::Values(sampled_case{"ngram", 2}, sampled_case{"layerskip", 2},
                                           sampled_case{"layerskip_shared", 2}),
                         [](const auto& info) { return std::string(info.param.drafter); });

TEST(SpecTiny, FullDepthLayerSkipIsFullyAccepted) {
  tiny_model tm;
  cpu_backend be(tm.cfg, tm.w, tiny_model::options(1));
  layerskip_drafter d(tm.cfg, tm.w, {.n_layers = static_cast<int32_t>(tm.cfg.n_layer), .max_slots = 1, .sampled = true},
                      tiny_factory(1));
  fixed_gamma_policy pol(3);
  for (float temp : {0.0f, 1.0f}) {
    sampling_params sp;
    sp.temperature = temp;
    sp.max_tokens = 29;  // x0 + 7 rounds of 3 accepted drafts + bonus
    sp.seed = 3;
    const spec_result r = spec_generate(be, &d, pol, nullptr, {}, std::vector<int32_t>{4, 1, 5}, sp);
    EXPECT_GT(r.metrics.draft_tokens_verified(), 0);
    EXPECT_EQ(r.metrics.draft_tokens_accepted(), r.metrics.draft_tokens_verified()) << "temperature " << temp;
    EXPECT_EQ(r.gen.token_ids.size(), 29u);
    EXPECT_DOUBLE_EQ(r.metrics.acceptance_length(), 4.0) << "gamma 3 + bonus every round";
  }
}

TEST(SpecTiny, GreedyEqualsPlainGenerate) {
  tiny_model tm(/*n_vocab=*/16, /*n_layer=*/3, /*seed=*/9);
  cpu_backend be(tm.cfg, tm.w, tiny_model::options(4));
  sampling_params sp;
  sp.max_tokens = 40;
  std::vector<std::vector<int32_t>> prompts;
  for (int32_t i = 0; i < 8; ++i) prompts.push_back({i, (i * 7) % 16, 3, i % 5});
  std::vector<std::vector<int32_t>> plain;
  for (const auto& p : prompts) plain.push_back(generate(be, nullptr, {}, p, sp).token_ids);
  for (int gamma : {1, 3, 7}) {
    ngram_drafter ng({.min_n = 1, .max_n = 3, .max_slots = 4});
    layerskip_drafter ls(tm.cfg, tm.w, {.n_layers = 1, .max_slots = 4, .sampled = true}, tiny_factory(4));
    layerskip_drafter shared(tm.cfg, tm.w, {.n_layers = 2, .max_slots = 4, .sampled = true, .shared_target = &be},
                             tiny_factory(4));
    for (drafter* d : {static_cast<drafter*>(&ng), static_cast<drafter*>(&ls), static_cast<drafter*>(&shared)}) {
      fixed_gamma_policy pol(gamma);
      spec_decoder dec(be, d, pol, nullptr, {}, {.max_requests = 4});
      std::vector<int32_t> ids;
      for (int32_t i = 0; i < 4; ++i) ids.push_back(dec.add(prompts[i], sp));
      int next = 4;
      std::map<int32_t, size_t> which = {{0, 0}, {1, 1}, {2, 2}, {3, 3}};
      size_t done = 0;
      while (done < prompts.size()) {
        dec.step();
        for (int32_t id = 0; id < 4; ++id) {
          if (!which.count(id) || !dec.finished(id)) continue;
          const spec_result r = dec.take(id);
          EXPECT_EQ(r.gen.token_ids, plain[which[id]]) << d->caps().name << " gamma " << gamma << " prompt " << which[id];
          which.erase(id);
          ++done;
          if (next < static_cast<int>(prompts.size())) which[dec.add(prompts[static_cast<size_t>(next)], sp)] = static_cast<size_t>(next), ++next;
        }
      }
      EXPECT_GT(dec.metrics().verify_steps(), 0);
    }
  }
}

// ignore_eos: the stop ids no longer end a request; it runs to max_tokens and its tokens (stop
// ids kept) equal plain decoding with no stop ids at all, in generate() and in the spec loop.
TEST(SpecTiny, IgnoreEosRunsToMaxTokensThroughStopIds) {
  tiny_model tm(/*n_vocab=*/16, /*n_layer=*/3, /*seed=*/9);
  cpu_backend be(tm.cfg, tm.w, tiny_model::options(2));
  sampling_params sp;
  sp.max_tokens = 24;
  const std::vector<int32_t> prompt = {1, 7, 3, 4};
  const std::vector<int32_t> full = generate(be, nullptr, {}, prompt, sp).token_ids;  // no stop ids
  ASSERT_EQ(full.size(), 24u);
  const int32_t stop[] = {full[5]};  // a "stop id" the greedy text reaches at token 5 at the latest
  const generation_result stopped = generate(be, nullptr, stop, prompt, sp);
  EXPECT_EQ(stopped.finish, finish_reason::stop_id);
  EXPECT_LE(stopped.token_ids.size(), 5u);
  sampling_params through = sp;
  through.ignore_eos = true;
  const generation_result plain = generate(be, nullptr, stop, prompt, through);
  EXPECT_EQ(plain.finish, finish_reason::max_tokens);
  EXPECT_EQ(plain.token_ids, full);
  ngram_drafter ng({.min_n = 1, .max_n = 3, .max_slots = 2});
  fixed_gamma_policy pol(3);
  spec_decoder dec(be, &ng, pol, nullptr, stop, {.max_requests = 2});
  const int32_t a = dec.add(prompt, sp), b = dec.add(prompt, through);
  while (!dec.finished(a) || !dec.finished(b)) dec.step();
  EXPECT_EQ(dec.take(a).gen.token_ids, stopped.token_ids);
  const spec_result rb = dec.take(b);
  EXPECT_EQ(rb.gen.finish, finish_reason::max_tokens);
  EXPECT_EQ(rb.gen.token_ids, full);
}

// Two short prompts that decode first and a 40-token one that joins them, on a 3-layer tiny
// model (vocabulary 16), with each prompt's plain generate() output and the drafters the
// joining tests run: none (plain), n-gram, and layer-skip on the target's own KV.
struct joining_prompt_case {
  tiny_model tm{/*n_vocab=*/16, /*n_layer=*/3, /*seed=*/11};
  cpu_backend be{tm.cfg, tm.w, tiny_model::options(3)};
  sampling_params sp;
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::vector<int32_t>> plain;
  ngram_drafter ng{{.min_n = 1, .max_n = 3, .max_slots = 3}};
  layerskip_drafter shared{tm.cfg, tm.w, {.n_layers = 2, .max_slots = 3, .sampled = true, .shared_target = &be},
                           tiny_factory(3)};

  joining_prompt_case() {
    sp.max_tokens = 20;
    std::vector<int32_t> long_prompt;
    for (int32_t i = 0; i < 40; ++i) long_prompt.push_back((i * 5 + 3) % 16);
    prompts = {{1, 2, 3}, {4, 5, 6, 7}, long_prompt};
    for (const auto& p : prompts) plain.push_back(generate(be, nullptr, {}, p, sp).token_ids);
  }
  std::vector<drafter*> drafters() { return {nullptr, &ng, &shared}; }
};

TEST(SpecTiny, LongPromptJoiningDecodersIsPrefilledOneChunkPerStep) {
  // Two requests decode; a 40-token prompt joins. With prefill_chunk 8 each step carries one
  // 8-token chunk, so the decoders get a token every step and the newcomer's first token comes
  // on the 5th step. Scheduling only: every output equals plain generate().
  joining_prompt_case jc;
  const auto& prompts = jc.prompts;
  const sampling_params& sp = jc.sp;
  for (drafter* d : jc.drafters()) {
    const std::string name = d ? d->caps().name : "plain";
    fixed_gamma_policy pol(d ? 2 : 0);
    spec_decoder dec(jc.be, d, pol, nullptr, {}, {.max_requests = 3, .prefill_chunk = 8});
    std::vector<int32_t> per_step_tokens(3, 0);
    std::vector<int32_t> ids;
    for (int32_t i = 0; i < 2; ++i)
      ids.push_back(dec.add(prompts[static_cast<size_t>(i)], sp, [&, i](int32_t, std::string_view) { ++per_step_tokens[i]; }));
    dec.step();  // both short prompts prefilled together (nobody decoding yet: no budget)
    ids.push_back(dec.add(prompts[2], sp, [&](int32_t, std::string_view) { ++per_step_tokens[2]; }));
    int steps_to_first = 0;
    while (per_step_tokens[2] == 0) {
      per_step_tokens[0] = per_step_tokens[1] = 0;
      dec.step();
      ++steps_to_first;
      ASSERT_LE(steps_to_first, 10) << name;
      if (per_step_tokens[2] == 0) {  // still prefilling: the decoders were not held up
        EXPECT_GE(per_step_tokens[0], 1) << name << " step " << steps_to_first;
        EXPECT_GE(per_step_tokens[1], 1) << name << " step " << steps_to_first;
      }
    }
    EXPECT_EQ(steps_to_first, 5) << name << ": 40 prompt tokens in chunks of 8";
    dec.run();
    for (size_t i = 0; i < 3; ++i)
      EXPECT_EQ(dec.take(ids[i]).gen.token_ids, jc.plain[i]) << name << " prompt " << i;
  }
}

// Prompts that join together share one prefill forward. When they do not fit the KV pool
// together, they are prefilled one at a time, and one that does not fit even alone ends as
// context_full without tokens; the other's output equals plain generate().
TEST(SpecTiny, JoiningPromptsShareAForwardAndFallBackOneAtATimeWhenTheKvIsShort) {
  tiny_model tm(/*n_vocab=*/16, /*n_layer=*/2, /*seed=*/4);
  cpu_backend_options o = tiny_model::options(2);
  o.kv_block_size = 8;
  o.kv_blocks = 3;  // 24 positions: one 12-token prompt (2 blocks) fits, two do not
  cpu_backend be(tm.cfg, tm.w, o);
  sampling_params sp;
  sp.max_tokens = 4;  // 12 + 4 positions: still 2 blocks
  std::vector<int32_t> a, b;
  for (int32_t i = 0; i < 12; ++i) {
    a.push_back((i * 3 + 1) % 16);
    b.push_back((i * 5 + 2) % 16);
  }
  const std::vector<int32_t> plain_a = generate(be, nullptr, {}, a, sp).token_ids;
  ASSERT_EQ(be.kv().free_blocks(), 3);
  fixed_gamma_policy pol(0);
  spec_decoder dec(be, nullptr, pol, nullptr, {}, {.max_requests = 2});
  const int32_t ia = dec.add(a, sp), ib = dec.add(b, sp);
  dec.step();
  ASSERT_TRUE(dec.finished(ib));
  const spec_result rb = dec.take(ib);
  EXPECT_EQ(rb.gen.finish, finish_reason::context_full);
  EXPECT_TRUE(rb.gen.token_ids.empty());
  dec.run();
  EXPECT_EQ(dec.take(ia).gen.token_ids, plain_a);
  EXPECT_EQ(be.kv().free_blocks(), 3);

  // With room for both, the two prompts take one forward between them.
  cpu_backend roomy(tm.cfg, tm.w, tiny_model::options(2));
  test::counting_backend count(roomy);
  spec_decoder two(count, nullptr, pol, nullptr, {}, {.max_requests = 2});
  two.add(a, sp);
  two.add(b, sp);
  two.step();
  EXPECT_EQ(count.forwards, 2) << "one prefill forward for both prompts, then one decode forward";
}

// fused_prefill: while requests decode, a joining prompt's chunks ride in the verify forward
// (one forward per step instead of two). Scheduling only: every output equals plain
// generate(), for plain decoding, the n-gram drafter and a layer-skip drafter on the target's
// own KV; and when the KV pool cannot take the fused forward, the chunks and the verify rows
// fall back to forwards of their own with the same outputs.
TEST(SpecTiny, FusedPrefillChunksRideInTheVerifyForward) {
  joining_prompt_case jc;
  const auto& prompts = jc.prompts;
  const sampling_params& sp = jc.sp;
  test::counting_backend count(jc.be);
  for (drafter* d : jc.drafters()) {
    const std::string name = d ? d->caps().name : "plain";
    fixed_gamma_policy pol(d ? 2 : 0);
    // the layer-skip drafter forwards on the target itself: count only plain and n-gram
    backend& target = d == &jc.shared ? static_cast<backend&>(jc.be) : static_cast<backend&>(count);
    spec_decoder dec(target, d, pol, nullptr, {}, {.max_requests = 3, .prefill_chunk = 8, .fused_prefill = true});
    std::vector<int32_t> ids;
    for (int32_t i = 0; i < 2; ++i) ids.push_back(dec.add(prompts[static_cast<size_t>(i)], sp));
    dec.step();  // nobody decoding yet: the two short prompts prefill on their own, then decode
    std::vector<int32_t> third_tokens;
    ids.push_back(dec.add(prompts[2], sp, [&](int32_t t, std::string_view) { third_tokens.push_back(t); }));
    int steps = 0;
    while (third_tokens.empty()) {
      const int before = count.forwards;
      dec.step();
      ++steps;
      ASSERT_LE(steps, 10) << name;
      if (d != &jc.shared) {
        EXPECT_EQ(count.forwards - before, 1) << name << ": one forward per step, step " << steps;
      }
    }
    EXPECT_EQ(steps, 5) << name << ": 40 prompt tokens in chunks of 8, the last one's row gives x0";
    dec.run();
    for (size_t i = 0; i < 3; ++i) EXPECT_EQ(dec.take(ids[i]).gen.token_ids, jc.plain[i]) << name << " prompt " << i;
  }

  // A pool too small for the joining prompt next to the decoder: the fused forward is out of
  // KV, so the chunk goes on its own (and, alone still too big, ends as context_full) and the
  // verify rows on theirs; the decoder's output is plain generate()'s.
  cpu_backend_options o = tiny_model::options(2);
  o.kv_block_size = 8;
  o.kv_blocks = 3;  // 24 positions: a (10 + 6) holds 2 blocks, b (12) would need 2 more
  cpu_backend tight(jc.tm.cfg, jc.tm.w, o);
  const std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, b(12, 7);
  sampling_params short_sp;
  short_sp.max_tokens = 6;
  const std::vector<int32_t> plain_a = generate(tight, nullptr, {}, a, short_sp).token_ids;
  test::counting_backend tight_count(tight);
  fixed_gamma_policy pol(0);
  spec_decoder dec(tight_count, nullptr, pol, nullptr, {}, {.max_requests = 2, .prefill_chunk = 16, .fused_prefill = true});
  const int32_t ia = dec.add(a, short_sp);
  dec.step();
  const int32_t ib = dec.add(b, short_sp);
  dec.step();
  EXPECT_EQ(tight_count.out_of_kv, 2) << "the fused forward, then the chunk alone";
  ASSERT_TRUE(dec.finished(ib));
  const spec_result rb = dec.take(ib);
  EXPECT_EQ(rb.gen.finish, finish_reason::context_full);
  EXPECT_TRUE(rb.gen.token_ids.empty());
  dec.run();
  EXPECT_EQ(dec.take(ia).gen.token_ids, plain_a);
  EXPECT_EQ(tight.kv().free_blocks(), 3);
}

TEST(SpecTiny, CancelFreesEveryKvBlock) {
  tiny_model tm;
  cpu_backend be(tm.cfg, tm.w, tiny_model::options(2));
  layerskip_drafter d(tm.cfg, tm.w, {.n_layers = 1, .max_slots = 2, .sampled = true}, tiny_factory(2));
  const auto& draft_kv = static_cast<cpu_backend&>(d.draft_backend()).kv();
  const int32_t free0 = be.kv().free_blocks(), draft_free0 = draft_kv.free_blocks();
  fixed_gamma_policy pol(3);
  spec_decoder dec(be, &d, pol, nullptr, {}, {.max_requests = 2});
  sampling_params sp;
  sp.max_tokens = 50;
  sp.temperature = 0.7f;
  const std::vector<int32_t> prompt(20, 2);  // 20 tokens: more than one 16-position block
  const int32_t a = dec.add(prompt, sp), b = dec.add(prompt, sp);
  for (int i = 0; i < 3; ++i) dec.step();
  ASSERT_FALSE(dec.finished(a));
  const int32_t free_mid = be.kv().free_blocks();
  EXPECT_LT(free_mid, free0);
  dec.cancel(a);
  EXPECT_TRUE(dec.finished(a));
  EXPECT_GT(be.kv().free_blocks(), free_mid);
  const spec_result ra = dec.take(a);
  EXPECT_TRUE(ra.cancelled);
  EXPECT_GT(ra.gen.token_ids.size(), 0u);
  dec.step();  // b goes on alone
  dec.cancel(b);
  EXPECT_EQ(be.kv().free_blocks(), free0);
  EXPECT_EQ(draft_kv.free_blocks(), draft_free0);
  EXPECT_TRUE(dec.take(b).cancelled);
}

TEST(SpecTiny, InvalidParametersRejected) {
  tiny_model tm;
  cpu_backend be(tm.cfg, tm.w, tiny_model::options(1));
  ngram_drafter d({.min_n = 1, .max_n = 2, .max_slots = 1});
  fixed_gamma_policy pol(2);
  spec_decoder dec(be, &d, pol, nullptr, {});
  const int32_t free0 = be.kv().free_blocks();
  const std::vector<int32_t> prompt = {1, 2};
  auto bad = [&](auto edit) {
    sampling_params sp;
    edit(sp);
    EXPECT_THROW(dec.add(prompt, sp), invalid_argument_error);
  };
  bad([](sampling_params& p) { p.temperature = -0.5f; });
  bad([](sampling_params& p) { p.top_p = 0.0f; });
  bad([](sampling_params& p) { p.min_p = 1.5f; });
  bad([](sampling_params& p) { p.top_k = -1; });
  bad([](sampling_params& p) { p.max_tokens = 0; });
  bad([](sampling_params& p) { p.stop = {"x"}; });  // stop strings need a tokenizer
  EXPECT_THROW(dec.add(std::vector<int32_t>{}, sampling_params{}), invalid_argument_error);
  EXPECT_THROW(dec.add(std::vector<int32_t>{1, 99}, sampling_params{}), invalid_argument_error);
  EXPECT_THROW(dec.add(std::vector<int32_t>(64, 1), sampling_params{}), invalid_argument_error);  // no room
  EXPECT_EQ(be.kv().free_blocks(), free0);
  // Nothing leaked: the one slot still works.
  const int32_t id = dec.add(prompt, sampling_params{});
  dec.run();
  EXPECT_FALSE(dec.take(id).gen.token_ids.empty());
  EXPECT_THROW(fixed_gamma_policy(-2), invalid_argument_error);
  EXPECT_THROW(spec_decoder(be, &d, pol, nullptr, {}, {.max_requests = 2}), invalid_argument_error);  // > n_seq_max
  fixed_gamma_policy huge(200);
  EXPECT_THROW(spec_decoder(be, &d, huge, nullptr, {}), invalid_argument_error);  // budget > step rows
  EXPECT_THROW(layerskip_drafter(tm.cfg, tm.w, {.n_layers = 3, .max_slots = 1, .sampled = true}, tiny_factory(1)),
               invalid_argument_error);
}

// Drafting on the target's KV (forward_prefix) computes what a K-layer copy with its own KV
// computes: the same drafts, hence the same acceptance, and the target's sequences end each
// round at their committed length.
TEST(SpecTiny, SharedCacheLayerSkipDraftsLikeAnOwnCache) {
  tiny_model tm(/*n_vocab=*/16, /*n_layer=*/3, /*seed=*/9);
  for (float temp : {0.0f, 1.0f}) {
    sampling_params sp;
    sp.temperature = temp;
    sp.max_tokens = 40;
    sp.seed = 11;
    const std::vector<int32_t> prompt = {3, 1, 4, 1, 5, 9, 2, 6};
    cpu_backend be_own(tm.cfg, tm.w, tiny_model::options(1));
    layerskip_drafter own(tm.cfg, tm.w, {.n_layers = 2, .max_slots = 1, .sampled = true}, tiny_factory(1));
    fixed_gamma_policy pol(3);
    const spec_result a = spec_generate(be_own, &own, pol, nullptr, {}, prompt, sp);
    cpu_backend be(tm.cfg, tm.w, tiny_model::options(1));
    layerskip_drafter shared(tm.cfg, tm.w, {.n_layers = 2, .max_slots = 1, .sampled = true, .shared_target = &be},
                             tiny_factory(1));
    const spec_result b = spec_generate(be, &shared, pol, nullptr, {}, prompt, sp);
    EXPECT_EQ(a.gen.token_ids, b.gen.token_ids) << "temperature " << temp;
    EXPECT_EQ(a.metrics.draft_tokens_accepted(), b.metrics.draft_tokens_accepted()) << "temperature " << temp;
    EXPECT_EQ(a.metrics.verify_steps(), b.metrics.verify_steps()) << "temperature " << temp;
    EXPECT_GT(b.metrics.draft_tokens_verified(), 0);
  }
}

TEST(SpecTiny, ForwardPrefixEqualsATruncatedModel) {
  tiny_model tm(/*n_vocab=*/16, /*n_layer=*/3, /*seed=*/9);
  model_config c2 = tm.cfg;
  c2.n_layer = 2;
  llama_weights w2 = tm.w;
  w2.layers.resize(2);
  cpu_backend full(tm.cfg, tm.w, tiny_model::options(2));
  cpu_backend cut(c2, w2, tiny_model::options(2));
  const int32_t a = *full.open_sequence(), b = *cut.open_sequence();
  const std::vector<int32_t> prompt = {3, 1, 4, 1, 5};
  // The full model's KV for the prompt (all layers), then a 3-token prefix step on top.
  const batch_sequence pf{a, 5, 0}, pc{b, 5, 0};
  full.forward({prompt, {&pf, 1}, {}});
  cut.forward({prompt, {&pc, 1}, {}});
  const std::vector<int32_t> more = {9, 2, 6};
  const batch_sequence qf{a, 3, 3}, qc{b, 3, 3};
  const int32_t cap[] = {1};
  const forward_output of = full.forward_prefix({more, {&qf, 1}, cap}, 2);
  const std::vector<float> lf(of.logits, of.logits + 3 * tm.cfg.n_vocab);
  const std::vector<float> hf(of.hidden, of.hidden + 3 * tm.cfg.n_embd);
  const forward_output oc = cut.forward({more, {&qc, 1}, cap});
  for (size_t i = 0; i < lf.size(); ++i) ASSERT_EQ(lf[i], oc.logits[i]) << i;
  for (size_t i = 0; i < hf.size(); ++i) ASSERT_EQ(hf[i], oc.hidden[i]) << i;
  EXPECT_EQ(full.sequence_length(a), 8);
  const int32_t bad_cap[] = {2};
  full.truncate(a, 5);
  EXPECT_THROW(full.forward_prefix({more, {&qf, 1}, bad_cap}, 2), invalid_argument_error);
  EXPECT_THROW(full.forward_prefix({more, {&qf, 1}, {}}, 0), invalid_argument_error);
  EXPECT_THROW(full.forward_prefix({more, {&qf, 1}, {}}, 4), invalid_argument_error);
  EXPECT_EQ(full.sequence_length(a), 5);  // refused calls change nothing
}

}  // namespace
}  // namespace dspark

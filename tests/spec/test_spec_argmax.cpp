// The spec loop's use of argmax rows (forward_batch::outputs, engine/backend.h), on the tiny
// in-memory model through a backend wrapper that records what each forward asked for:
//   - when every request of a verify forward is greedy, the forward asks for argmax ids only
//     (so do greedy prefills), no logit rows come back, and the output equals plain greedy
//     decoding that scans the logit rows itself, token for token;
//   - a batch mixing greedy and sampled requests asks for logits; its greedy requests still equal
//     plain decoding and its sampled ones equal the same request decoded alone.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "engine/spec/policy.h"
#include "engine/spec/spec_decoder.h"
#include "engine/spec/verify.h"
#include "models/drafters/layerskip_drafter.h"
#include "models/drafters/ngram_drafter.h"
#include "forwarding_backend.h"
#include "tiny_model.h"

namespace dspark {
namespace {

using test::tiny_model;

// Passes everything to `inner` and counts the forwards with logit rows by what they asked for.
class recording_backend final : public test::forwarding_backend {
 public:
  using forwarding_backend::forwarding_backend;
  forward_output forward(const forward_batch& b) override {
    int64_t rows = 0;
    for (const batch_sequence& s : b.seqs) rows += s.n_logits;
    if (rows > 0) ++(b.outputs == row_outputs::argmax ? argmax_only : b.outputs == row_outputs::logits ? logits_only : both);
    const forward_output o = forwarding_backend::forward(b);
    // What was not asked for does not come back (a caller reading it would crash here).
    if (rows > 0 && o.status == forward_status::ok) {
      EXPECT_EQ(o.logits == nullptr, b.outputs == row_outputs::argmax);
      EXPECT_EQ(o.argmax == nullptr, b.outputs == row_outputs::logits);
    }
    return o;
  }

  int64_t argmax_only = 0, logits_only = 0, both = 0;
};

draft_backend_factory tiny_factory(int32_t n_seq) {
  return [n_seq](const model_config& c, const llama_weights& w) {
    return std::make_unique<cpu_backend>(c, w, tiny_model::options(n_seq));
  };
}

// Plain greedy decoding of n_new tokens that asks for logit rows and takes argmax_index of each.
std::vector<int32_t> greedy_from_logits(backend& be, const std::vector<int32_t>& prompt, int32_t n_new) {
  const int32_t seq = *be.open_sequence();
  std::vector<int32_t> ctx = prompt, out;
  batch_sequence s{seq, static_cast<int32_t>(prompt.size()), 1};
  forward_batch fb;
  fb.tokens = ctx;
  fb.seqs = {&s, 1};
  forward_output o = be.forward(fb);
  while (static_cast<int32_t>(out.size()) < n_new) {
    EXPECT_EQ(o.status, forward_status::ok);
    out.push_back(argmax_index({o.logits, static_cast<size_t>(be.limits().n_vocab)}));
    s = batch_sequence{seq, 1, 1};
    fb.tokens = {&out.back(), 1};
    o = be.forward(fb);
  }
  be.free_sequence(seq);
  return out;
}

std::vector<std::vector<int32_t>> prompts_for(int64_t n_vocab, int n) {
  std::vector<std::vector<int32_t>> p;
  for (int32_t i = 0; i < n; ++i) p.push_back({i % 16, (i * 7) % 16, 3, i % 5, static_cast<int32_t>((i * 11) % n_vocab)});
  return p;
}

TEST(SpecArgmax, AllGreedyVerifiesFromArgmaxIdsAndEqualsPlainDecoding) {
  tiny_model tm(/*n_vocab=*/16, /*n_layer=*/3, /*seed=*/9);
  cpu_backend inner(tm.cfg, tm.w, tiny_model::options(4));
  sampling_params sp;
  sp.max_tokens = 40;
  const std::vector<std::vector<int32_t>> prompts = prompts_for(tm.cfg.n_vocab, 8);
  std::vector<std::vector<int32_t>> plain;
  for (const auto& p : prompts) plain.push_back(greedy_from_logits(inner, p, sp.max_tokens));
  for (int gamma : {1, 4}) {
    ngram_drafter ng({.min_n = 1, .max_n = 3, .max_slots = 4});
    layerskip_drafter ls(tm.cfg, tm.w, {.n_layers = 1, .max_slots = 4, .sampled = true}, tiny_factory(4));
    layerskip_drafter shared(tm.cfg, tm.w, {.n_layers = 2, .max_slots = 4, .sampled = true, .shared_target = &inner},
                             tiny_factory(4));
    for (drafter* d : {static_cast<drafter*>(&ng), static_cast<drafter*>(&ls), static_cast<drafter*>(&shared)}) {
      recording_backend be(inner);
      fixed_gamma_policy pol(gamma);
      spec_decoder dec(be, d, pol, nullptr, {}, {.max_requests = 4, .prefill_chunk = 2});
      const std::vector<spec_result> got = spec_generate_all(dec, prompts, sp, false);
      const std::string what = std::string(d->caps().name) + " gamma " + std::to_string(gamma);
      for (size_t i = 0; i < prompts.size(); ++i) EXPECT_EQ(got[i].gen.token_ids, plain[i]) << what << " prompt " << i;
      EXPECT_GT(dec.metrics().draft_tokens_accepted(), 0) << what;
      EXPECT_GT(be.argmax_only, 0) << what;
      EXPECT_EQ(be.logits_only, 0) << what << ": a greedy forward copied logit rows";
      EXPECT_EQ(be.both, 0) << what;
    }
  }
}

TEST(SpecArgmax, MixedGreedyAndSampledBatchUsesLogitsAndStaysLossless) {
  tiny_model tm(/*n_vocab=*/16, /*n_layer=*/3, /*seed=*/9);
  cpu_backend inner(tm.cfg, tm.w, tiny_model::options(4));
  const std::vector<std::vector<int32_t>> prompts = prompts_for(tm.cfg.n_vocab, 4);
  // Requests 0 and 2 greedy, 1 and 3 sampled (their own seeds; draws are keyed by seed, round
  // and position, so a sampled request decodes the same alone or in any batch).
  std::vector<sampling_params> params(4);
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].max_tokens = 32;
    if (i % 2 == 1) {
      params[i].temperature = 0.8f;
      params[i].seed = 100 + i;
    }
  }
  for (int kind = 0; kind < 2; ++kind) {
    auto make_drafter = [&]() -> std::unique_ptr<drafter> {
      if (kind == 0) return std::make_unique<ngram_drafter>(ngram_drafter_params{.min_n = 1, .max_n = 3, .max_slots = 4});
      return std::make_unique<layerskip_drafter>(tm.cfg, tm.w, layerskip_drafter_params{.n_layers = 1, .max_slots = 4},
                                                 tiny_factory(4));
    };
    // References: greedy requests by plain decoding, sampled ones decoded alone.
    std::vector<std::vector<int32_t>> want(4);
    for (size_t i = 0; i < 4; ++i) {
      if (i % 2 == 0) {
        want[i] = greedy_from_logits(inner, prompts[i], params[i].max_tokens);
      } else {
        const std::unique_ptr<drafter> d = make_drafter();
        fixed_gamma_policy pol(3);
        want[i] = spec_generate(inner, d.get(), pol, nullptr, {}, prompts[i], params[i]).gen.token_ids;
      }
    }
    recording_backend be(inner);
    const std::unique_ptr<drafter> d = make_drafter();
    fixed_gamma_policy pol(3);
    spec_decoder dec(be, d.get(), pol, nullptr, {}, {.max_requests = 4});
    for (size_t i = 0; i < 4; ++i) ASSERT_EQ(dec.add(prompts[i], params[i]), static_cast<int32_t>(i));
    dec.step();  // prefills all four in one forward, then one verify forward over the mixed batch
    EXPECT_EQ(be.both, 1) << "the shared prefill: argmax ids for the greedy prompts, logit rows for the sampled";
    EXPECT_EQ(be.argmax_only, 0);
    EXPECT_EQ(be.logits_only, 1) << "the mixed verify forward";
    dec.run();
    for (int32_t i = 0; i < 4; ++i) {
      const spec_result r = dec.take(i);
      EXPECT_EQ(r.gen.token_ids, want[static_cast<size_t>(i)]) << "drafter " << kind << " request " << i;
    }
    EXPECT_EQ(be.both, 1) << "only the shared prefill asks for both";
  }
}

}  // namespace
}  // namespace dspark

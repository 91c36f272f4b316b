// The drafters against the double-precision reference (reference_forward.h) on tiny random
// weights: base, Markov, RNN and confidence logits of dspark/dflash over two rounds (the
// persistent context cache) and after a rollback, EAGLE-3/MTP-1 chain logits; GQA throughout.
#include <random>

#include <gtest/gtest.h>

#include "models/drafters/drafter_config.h"
#include "models/drafters/drafter_weights.h"
#include "models/drafters/dspark_drafter.h"
#include "models/drafters/eagle3_drafter.h"
#include "tests/drafters/drafter_fixture.h"
#include "tests/drafters/reference_forward.h"

namespace dspark {
namespace {

using test::dvec;

struct tiny_setup {
  drafter_config c;
  drafter_weights w;
  test::ref_target t;
  drafter_target_head head;

  explicit tiny_setup(const test::tiny_dims& d, uint32_t seed) {
    const nlohmann::json j = test::tiny_config(d);
    const std::string dir = test::write_drafter_folder(d.kind, j, test::random_drafter_tensors(j, seed));
    c = load_drafter_config(dir);
    w = load_drafter_weights(dir, c);
    std::mt19937 rng(seed + 100);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    t.embed.resize(static_cast<size_t>(d.n_vocab * d.n_embd));
    t.lm_head.resize(t.embed.size());
    for (float& x : t.embed) x = nd(rng);
    for (float& x : t.lm_head) x = 0.3f * nd(rng);
    head.embed = test::f32_view(t.embed, d.n_vocab, d.n_embd, "embed");
    head.lm_head = test::f32_view(t.lm_head, d.n_vocab, d.n_embd, "lm_head");
  }
};

std::vector<std::vector<float>> random_features(int64_t n, int64_t width, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<std::vector<float>> F(static_cast<size_t>(n), std::vector<float>(static_cast<size_t>(width)));
  for (auto& r : F)
    for (float& x : r) x = nd(rng);
  return F;
}

// Feeds rows [p0, p1) of F to the drafter in the backend's layout ([layer][row][d]).
void commit_features(drafter& dr, int32_t slot, const drafter_config& c, const std::vector<std::vector<float>>& F,
                     int32_t p0, int32_t p1) {
  const int64_t m = static_cast<int64_t>(c.target_layers.size()), d = c.target_n_embd, n = p1 - p0;
  std::vector<float> buf(static_cast<size_t>(m * n * d));
  for (int64_t l = 0; l < m; ++l)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < d; ++k)
        buf[static_cast<size_t>((l * n + i) * d + k)] = F[static_cast<size_t>(p0 + i)][static_cast<size_t>(l * d + k)];
  commit_info ci;
  ci.features_pos0 = p0;
  ci.features.data = buf.data();
  ci.features.n_layers = static_cast<int32_t>(m);
  ci.features.n_rows = static_cast<int32_t>(n);
  ci.features.n_embd = d;
  ci.features.layer_stride = n * d;
  dr.on_commit(slot, ci);
}

void expect_close(const std::vector<float>& got, size_t off, const dvec& ref, const char* what, int k) {
  double scale = 0;
  for (double x : ref) scale = std::max(scale, std::abs(x));
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::abs(got[off + i] - ref[i]));
  EXPECT_LE(worst, 1e-4 * (1 + scale)) << what << " slot " << k << " (max |ref| " << scale << ")";
}

// Runs one dspark/dflash round with forced prev tokens and compares every recorded output.
void check_round(dspark_drafter& dr, const tiny_setup& s, const std::vector<std::vector<float>>& F, int32_t anchor,
                 const std::vector<int32_t>& prev) {
  const int32_t G = s.c.block_size;
  std::vector<int32_t> ctx(F.size(), 5);
  ctx.push_back(anchor);
  draft_batch out(draft_batch_params{1, G, s.c.target_n_vocab, draft_dist_kind::dense, 0});
  dr.force_prev(prev);
  propose_request r;
  r.slot = 0;
  r.max_drafts = G;
  r.context = ctx;
  dr.propose({&r, 1}, out);
  ASSERT_EQ(out.length(0), G);
  const test::ref_block_out ref = test::ref_block(s.c, s.w, s.t, F, anchor, prev);
  const size_t V = static_cast<size_t>(s.c.target_n_vocab);
  for (int k = 0; k < G; ++k) {
    expect_close(dr.recorded_base(), k * V, ref.base[static_cast<size_t>(k)], "base logits", k);
    expect_close(dr.recorded_logits(), k * V, ref.logits[static_cast<size_t>(k)], "draft logits", k);
    if (s.c.confidence) {
      EXPECT_NEAR(dr.recorded_conf()[static_cast<size_t>(k)], ref.conf[static_cast<size_t>(k)], 1e-4 * (1 + std::abs(ref.conf[static_cast<size_t>(k)])));
      const float want = 1.0f / (1.0f + std::exp(-static_cast<float>(ref.conf[static_cast<size_t>(k)]) / s.c.confidence_temperatures[static_cast<size_t>(k)]));
      EXPECT_NEAR(out.confidences(0)[static_cast<size_t>(k)], want, 1e-5);
    } else {
      EXPECT_EQ(out.confidences(0)[static_cast<size_t>(k)], 1.0f);
    }
  }
}

void run_block_case(test::tiny_dims d) {
  const tiny_setup s(d, 11);
  drafter_runtime_params p;
  p.max_slots = 1;
  p.max_ctx = 256;
  p.n_threads = 2;
  dspark_drafter dr(s.c, s.w, s.head, p);
  dr.set_record(true);
  const auto F = random_features(90, s.c.feature_width(), 21);  // > one 64-row chunk
  const std::vector<std::vector<float>> F1(F.begin(), F.begin() + 70), F2 = F;
  dr.begin(0, {});
  commit_features(dr, 0, s.c, F, 0, 70);
  check_round(dr, s, F1, 7, {7, 9, 1, 30});
  // Round 2: 20 more context rows appended to the persistent cache.
  commit_features(dr, 0, s.c, F, 70, 90);
  EXPECT_EQ(dr.context_rows(0), 90);
  check_round(dr, s, F2, 12, {12, 0, 63, 2});
  // Rollback to the round-1 context: the same outputs as round 1.
  dr.rollback(0, 71);
  EXPECT_EQ(dr.context_rows(0), 71);
  dr.rollback(0, 70);
  check_round(dr, s, F1, 7, {7, 9, 1, 30});
  dr.end(0);
}

TEST(DrafterReference, DsparkVanillaMarkovWithConfidence) { run_block_case({}); }

TEST(DrafterReference, DsparkRnnWithConfidenceAndQkNorm) {
  test::tiny_dims d;
  d.markov = "rnn";
  d.qk_norm = true;
  run_block_case(d);
}

TEST(DrafterReference, DflashNoSequentialHead) {
  test::tiny_dims d;
  d.kind = "dflash";
  d.markov = "none";
  d.confidence = false;
  run_block_case(d);
}

TEST(DrafterReference, DsparkNoMarkovConfidenceOnHidden) {
  test::tiny_dims d;
  d.markov = "none";
  d.n_head_kv = 1;  // GQA group of 4
  run_block_case(d);
}

void run_eagle_case(test::tiny_dims d) {
  const tiny_setup s(d, 13);
  drafter_runtime_params p;
  p.max_slots = 2;
  p.max_ctx = 256;
  p.n_threads = 2;
  eagle3_drafter dr(s.c, s.w, s.head, p);
  dr.set_record(true);
  const int32_t G = s.c.block_size, V = static_cast<int32_t>(s.c.target_n_vocab);
  const auto F = random_features(80, s.c.feature_width(), 23);
  std::mt19937 rng(5);
  std::vector<int32_t> ctx(82);
  for (int32_t& t : ctx) t = static_cast<int32_t>(rng() % static_cast<uint32_t>(V));
  std::vector<int32_t> chain;
  for (int j = 1; j < G; ++j) chain.push_back(static_cast<int32_t>(rng() % static_cast<uint32_t>(V)));
  dr.force_chain(chain);
  auto round = [&](int32_t P) {
    // Context = ctx[0..P] (anchor ctx[P] at position P); features of 0..P-1 were committed.
    draft_batch out(draft_batch_params{2, G, s.c.target_n_vocab, draft_dist_kind::dense, 0});
    propose_request r;
    r.slot = 1;
    r.max_drafts = G;
    r.context = std::span<const int32_t>(ctx.data(), static_cast<size_t>(P) + 1);
    dr.propose({&r, 1}, out);
    ASSERT_EQ(out.length(1), G);
    const std::vector<std::vector<float>> FP(F.begin(), F.begin() + P);
    const std::vector<int32_t> toks(ctx.begin() + 1, ctx.begin() + P + 1);
    const auto ref = test::ref_eagle(s.c, s.w, s.t, FP, toks, chain);
    for (int j = 0; j < G; ++j) expect_close(dr.recorded_logits(), static_cast<size_t>(j) * V, ref[static_cast<size_t>(j)], "chain logits", j);
  };
  dr.begin(1, {});
  commit_features(dr, 1, s.c, F, 0, 70);
  round(70);
  commit_features(dr, 1, s.c, F, 70, 80);  // the chain rows at 70.. are rebuilt from features
  round(80);
  dr.rollback(1, 71);
  round(70);
  dr.end(1);
}

TEST(DrafterReference, Eagle3ChainLogits) {
  test::tiny_dims d;
  d.kind = "eagle3";
  d.markov = "none";
  d.confidence = false;
  d.n_layer = 1;
  run_eagle_case(d);
}

TEST(DrafterReference, Mtp1SingleDraft) {
  test::tiny_dims d;
  d.kind = "mtp1";
  d.markov = "none";
  d.confidence = false;
  d.n_layer = 1;
  d.block_size = 1;
  d.target_layers = {3};
  d.qk_norm = true;
  run_eagle_case(d);
}

}  // namespace
}  // namespace dspark

// The GPU block drafter (models/drafters/cuda/cuda_block_drafter.h) against the CPU drafter
// (models/drafters/dspark_drafter.h, itself checked against a double-precision reference and
// PyTorch): same folder, same target features, the draft logits L_k (after the Markov bias)
// and confidence logits z_k within bf16 tolerance, over two rounds and a batch of two requests.
// The same for the GPU chain drafter (eagle3, mtp1; models/drafters/cuda/cuda_chain_drafter.h).
// Then speculative decoding on the CUDA target with every GPU drafter: token-identical to plain
// decoding at temperature 0, replayable from its seed at temperature 0.8, and, with trained
// drafters (DSPARK_TRAINED_DRAFTERS=DIR, set by scripts/device/drafter_suite.sh), the same
// acceptance as the CPU drafters.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "common/error.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "engine/spec/policy.h"
#include "engine/spec/prompt_set.h"
#include "engine/spec/spec_decoder.h"
#include "kernels/cuda/cuda_check.h"
#include "models/drafters/cuda/cuda_block_drafter.h"
#include "models/drafters/cuda/cuda_chain_drafter.h"
#include "models/drafters/cuda/cuda_trained_drafter.h"
#include "models/drafters/drafter_weights.h"
#include "models/drafters/dspark_drafter.h"
#include "models/drafters/eagle3_drafter.h"
#include "models/drafters/trained_drafter.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/drafters/drafter_fixture.h"
#include "tests/spec/forwarding_backend.h"
#include "tests/test_support.h"

namespace dspark {
namespace {

const model* shared_model() {
  static std::unique_ptr<model> m = [] {
    const std::string p = test::default_model_path();
    return p.empty() ? nullptr : std::make_unique<model>(load_model(p));
  }();
  return m.get();
}

double rel_l2(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (static_cast<double>(got[i]) - ref[i]) * (static_cast<double>(got[i]) - ref[i]);
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Random target features for positions [pos0, pos0 + n): [n_layers][n][n_embd].
struct feature_rows {
  std::vector<float> data;
  target_features view(int32_t n_layers, int32_t n, int64_t n_embd) const {
    target_features f;
    f.data = data.data();
    f.n_layers = n_layers;
    f.n_rows = n;
    f.n_embd = n_embd;
    f.layer_stride = static_cast<int64_t>(n) * n_embd;
    return f;
  }
};

feature_rows random_features(std::mt19937& rng, int32_t n_layers, int32_t n, int64_t n_embd) {
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  feature_rows r;
  r.data.resize(static_cast<size_t>(n_layers) * n * n_embd);
  for (float& x : r.data) x = u(rng);
  return r;
}

// Commits the same features to both drafters.
void commit_both(drafter& a, drafter& b, int32_t slot, const target_features& f, int32_t pos0,
                 std::span<const int32_t> tokens) {
  commit_info c;
  c.tokens = tokens;
  c.features = f;
  c.features_pos0 = pos0;
  a.on_commit(slot, c);
  b.on_commit(slot, c);
}

TEST(CudaBlockDrafter, RnnHeadAndOddShapesStayOnTheCpu) {
  test::tiny_dims d;
  d.markov = "rnn";
  std::string why;
  EXPECT_FALSE(cuda_block_drafter_supports(parse_drafter_config(test::tiny_config(d)), &why));
  EXPECT_NE(why.find("RNN"), std::string::npos) << why;
  d.markov = "vanilla";
  d.head_dim = 8;  // the paged attention kernel takes 64 or 128
  EXPECT_FALSE(cuda_block_drafter_supports(parse_drafter_config(test::tiny_config(d)), &why));
  EXPECT_NE(why.find("head_dim"), std::string::npos) << why;
  d.head_dim = 64;
  d.kind = "eagle3";
  d.markov = "none";
  d.confidence = false;
  d.n_layer = 1;
  EXPECT_FALSE(cuda_block_drafter_supports(parse_drafter_config(test::tiny_config(d)), &why));
}

// Both Markov variants the GPU runs (vanilla for dspark, none for dflash), over two rounds and
// two requests proposed together.
TEST(CudaBlockDrafter, MatchesTheCpuDrafterOnSmolLM2Dims) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  DSPARK_REQUIRE_MODEL(path);
  const model& m = *shared_model();
  for (const char* kind : {"dspark", "dflash"}) {
    SCOPED_TRACE(kind);
    const std::string dir = test::random_target_drafter(m, kind);
    drafter_runtime_params rp;
    rp.max_slots = 3;
    rp.max_ctx = 256;
    rp.sampled = false;
    rp.head_precision = matmul_precision::f32_activations;
    const drafter_config c = load_drafter_config(dir);
    dspark_drafter cpu(c, load_drafter_weights(dir, c), {m.weights().token_embd, m.weights().output}, rp);
    cuda_block_drafter gpu(c, load_drafter_weights(dir, c), {m.weights().token_embd, m.weights().output}, rp);
    cpu.set_record(true);
    gpu.set_record(true);
    const int32_t L = static_cast<int32_t>(c.target_layers.size()), G = c.block_size;
    const int64_t E = c.target_n_embd, V = c.target_n_vocab;
    std::mt19937 rng(7);
    // Two requests in slots 2 and 0 with prompts of 37 and 12 tokens.
    const int32_t req_slots[2] = {2, 0};
    std::vector<int32_t> ctx[2];
    for (int i = 0; i < 2; ++i) {
      const int32_t P = i == 0 ? 37 : 12;
      for (int32_t t = 0; t < P; ++t) ctx[i].push_back(static_cast<int32_t>(rng() % 40000));
      cpu.begin(req_slots[i], ctx[i]);
      gpu.begin(req_slots[i], ctx[i]);
      const feature_rows f = random_features(rng, L, P, E);
      commit_both(cpu, gpu, req_slots[i], f.view(L, P, E), 0, {});
      ctx[i].push_back(static_cast<int32_t>(rng() % 40000));  // x0
    }
    for (int round = 0; round < 2; ++round) {
      SCOPED_TRACE(round);
      draft_batch_params bp;
      bp.max_slots = rp.max_slots;
      bp.gamma_max = G;
      bp.n_vocab = V;
      bp.kind = draft_dist_kind::one_hot;
      draft_batch out_gpu(bp);
      propose_request reqs[2];
      for (int i = 0; i < 2; ++i) {
        reqs[i].slot = req_slots[i];
        reqs[i].max_drafts = i == 0 ? G : G - 2;
        reqs[i].context = ctx[i];
      }
      gpu.propose(reqs, out_gpu);
      for (int i = 0; i < 2; ++i) {
        SCOPED_TRACE(i);
        const int32_t g = out_gpu.length(req_slots[i]);
        ASSERT_EQ(g, reqs[i].max_drafts);
        // The CPU drafter, teacher-forced on the GPU's tokens, one request at a time.
        std::vector<int32_t> forced = {ctx[i].back()};
        for (int32_t k = 0; k < g; ++k) forced.push_back(out_gpu.tokens(req_slots[i])[k]);
        cpu.force_prev(forced);
        draft_batch out_cpu(bp);
        cpu.propose({&reqs[i], 1}, out_cpu);
        ASSERT_EQ(out_cpu.length(req_slots[i]), g);
        const std::vector<float> lg = gpu.recorded_logits(i);
        const std::vector<float>& lc = cpu.recorded_logits();
        int32_t same_argmax = 0;
        for (int32_t k = 0; k < g; ++k) {
          const std::vector<float> a(lg.begin() + k * V, lg.begin() + (k + 1) * V);
          const std::vector<float> b(lc.begin() + k * V, lc.begin() + (k + 1) * V);
          EXPECT_LT(rel_l2(a, b), 0.03) << "draft logits of position " << k;
          same_argmax += out_cpu.tokens(req_slots[i])[k] == out_gpu.tokens(req_slots[i])[k];
          if (c.confidence) {
            const float zg = gpu.recorded_conf(i)[static_cast<size_t>(k)], zc = cpu.recorded_conf()[static_cast<size_t>(k)];
            EXPECT_NEAR(zg, zc, 0.03 * (1.0 + std::abs(zc))) << "confidence logit of position " << k;
            EXPECT_NEAR(out_gpu.confidences(req_slots[i])[k], out_cpu.confidences(req_slots[i])[k], 0.02);
          }
        }
        // bf16 may flip a near tie, not most choices.
        EXPECT_GE(same_argmax, g - 1);
      }
      // Commit: 2 accepted drafts + a correction for request 0, none + correction for 1; the
      // features of rows x0..x_a arrive at x0's position.
      for (int i = 0; i < 2; ++i) {
        const int32_t a = i == 0 ? 2 : 0, pos0 = static_cast<int32_t>(ctx[i].size()) - 1;
        std::vector<int32_t> toks;
        for (int32_t k = 0; k < a; ++k) toks.push_back(out_gpu.tokens(req_slots[i])[k]);
        toks.push_back(static_cast<int32_t>(rng() % 40000));
        const feature_rows f = random_features(rng, L, a + 1, E);
        commit_both(cpu, gpu, req_slots[i], f.view(L, a + 1, E), pos0, toks);
        ctx[i].insert(ctx[i].end(), toks.begin(), toks.end());
        EXPECT_EQ(gpu.context_rows(req_slots[i]), cpu.context_rows(req_slots[i]));
      }
    }
    // A slot reused after end() starts from nothing; rollback drops rows.
    gpu.rollback(2, 10);
    EXPECT_EQ(gpu.context_rows(2), 10);
    gpu.end(2);
    gpu.begin(2, ctx[0]);
    EXPECT_EQ(gpu.context_rows(2), 0);
  }
}

// EAGLE-3 (chain of 4) and MTP-1 on the GPU against the CPU drafter, teacher-forced on the GPU's
// chain, over two rounds and two requests (the second round rebuilds rows from new features).
TEST(CudaChainDrafter, MatchesTheCpuDrafterOnSmolLM2Dims) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  DSPARK_REQUIRE_MODEL(path);
  const model& m = *shared_model();
  for (const char* kind : {"eagle3", "mtp1"}) {
    SCOPED_TRACE(kind);
    const std::string dir = test::random_target_drafter(m, kind);
    drafter_runtime_params rp;
    rp.max_slots = 3;
    rp.max_ctx = 256;
    rp.sampled = false;
    rp.head_precision = matmul_precision::f32_activations;
    const drafter_config c = load_drafter_config(dir);
    eagle3_drafter cpu(c, load_drafter_weights(dir, c), {m.weights().token_embd, m.weights().output}, rp);
    cuda_chain_drafter gpu(c, load_drafter_weights(dir, c), {m.weights().token_embd, m.weights().output}, rp);
    cpu.set_record(true);
    gpu.set_record(true);
    const int32_t L = static_cast<int32_t>(c.target_layers.size()), G = c.block_size;
    const int64_t E = c.target_n_embd, V = c.target_n_vocab;
    std::mt19937 rng(11);
    const int32_t req_slots[2] = {1, 2};
    std::vector<int32_t> ctx[2];
    for (int i = 0; i < 2; ++i) {
      const int32_t P = i == 0 ? 250 : 9;  // with the second, more than one 256-row K/V-only chunk
      for (int32_t t = 0; t < P; ++t) ctx[i].push_back(static_cast<int32_t>(rng() % 40000));
      cpu.begin(req_slots[i], ctx[i]);
      gpu.begin(req_slots[i], ctx[i]);
      const feature_rows f = random_features(rng, L, P, E);
      commit_both(cpu, gpu, req_slots[i], f.view(L, P, E), 0, {});
      ctx[i].push_back(static_cast<int32_t>(rng() % 40000));  // x0
    }
    for (int round = 0; round < 2; ++round) {
      SCOPED_TRACE(round);
      draft_batch_params bp;
      bp.max_slots = rp.max_slots;
      bp.gamma_max = G;
      bp.n_vocab = V;
      draft_batch out_gpu(bp);
      propose_request reqs[2];
      for (int i = 0; i < 2; ++i) {
        reqs[i].slot = req_slots[i];
        reqs[i].max_drafts = G;
        reqs[i].context = ctx[i];
      }
      gpu.propose(reqs, out_gpu);
      for (int i = 0; i < 2; ++i) {
        SCOPED_TRACE(i);
        const int32_t g = out_gpu.length(req_slots[i]);
        ASSERT_EQ(g, G);
        const std::span<const int32_t> toks = out_gpu.tokens(req_slots[i]);
        cpu.force_chain(std::vector<int32_t>(toks.begin(), toks.end()));
        draft_batch out_cpu(bp);
        cpu.propose({&reqs[i], 1}, out_cpu);
        ASSERT_EQ(out_cpu.length(req_slots[i]), g);
        const std::vector<float> lg = gpu.recorded_logits(i);
        const std::vector<float>& lc = cpu.recorded_logits();
        int32_t same = 0;
        for (int32_t k = 0; k < g; ++k) {
          const std::vector<float> a(lg.begin() + k * V, lg.begin() + (k + 1) * V);
          const std::vector<float> b(lc.begin() + k * V, lc.begin() + (k + 1) * V);
          EXPECT_LT(rel_l2(a, b), 0.03) << "logits of chain step " << k;
          same += out_cpu.tokens(req_slots[i])[k] == toks[k];
        }
        EXPECT_GE(same, g - 1);
      }
      for (int i = 0; i < 2; ++i) {
        const int32_t a = i == 0 ? std::min(2, G) : 0, pos0 = static_cast<int32_t>(ctx[i].size()) - 1;
        std::vector<int32_t> toks;
        for (int32_t k = 0; k < a; ++k) toks.push_back(out_gpu.tokens(req_slots[i])[k]);
        toks.push_back(static_cast<int32_t>(rng() % 40000));
        const feature_rows f = random_features(rng, L, a + 1, E);
        commit_both(cpu, gpu, req_slots[i], f.view(L, a + 1, E), pos0, toks);
        ctx[i].insert(ctx[i].end(), toks.begin(), toks.end());
      }
    }
  }
}

cuda::cuda_backend_options target_options() {
  cuda::cuda_backend_options o;
  o.n_seq_max = 2;
  o.n_ctx = 512;
  o.max_tokens_per_step = 64;
  o.max_capture_layers = 5;
  o.kv_blocks = 128;
  return o;
}

std::vector<std::vector<int32_t>> prompts(const model& m) {
  return {encode_chat_prompt(m.tokenizer(), "What is the capital of France?"),
          encode_chat_prompt(m.tokenizer(), "List the first five prime numbers."),
          encode_chat_prompt(m.tokenizer(), "Write a Python function that reverses a list.")};
}

TEST(CudaBlockDrafter, SpecDecodingOnTheGpuIsLossless) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  DSPARK_REQUIRE_MODEL(path);
  const model& m = *shared_model();
  cuda::cuda_backend be(m.config(), m.weights(), target_options());
  drafter_runtime_params rp;
  rp.max_ctx = 512;
  sampling_params sp;
  sp.max_tokens = 24;
  std::vector<generation_result> plain;
  for (const auto& p : prompts(m)) plain.push_back(generate(m, be, p, sp));
  std::unique_ptr<drafter> d;
  for (const char* kind : {"eagle3", "mtp1", "dflash", "dspark"}) {  // dspark last: used below
    SCOPED_TRACE(kind);
    std::string why;
    d = load_trained_drafter_cuda(test::random_target_drafter(m, kind), m.config(), m.weights(), rp, std::nullopt, &why);
    ASSERT_TRUE(d) << why;
    for (size_t i = 0; i < plain.size(); ++i)
      for (int32_t gamma : {1, 7}) {
        fixed_gamma_policy pol(gamma);
        const spec_result r = spec_generate(be, d.get(), pol, &m.tokenizer(), m.stop_ids(), prompts(m)[i], sp);
        EXPECT_EQ(r.gen.token_ids, plain[i].token_ids) << "gamma " << gamma;
        EXPECT_GT(r.metrics.draft_tokens_proposed(), 0);
      }
  }
  // Sampled: the GPU drafter draws on the host from its exact logits; same seed, same output.
  sp.temperature = 0.8f;
  sp.top_p = 0.95f;
  sp.seed = 99;
  fixed_gamma_policy pol(4);
  const spec_result a = spec_generate(be, d.get(), pol, &m.tokenizer(), m.stop_ids(), prompts(m)[0], sp);
  const spec_result b = spec_generate(be, d.get(), pol, &m.tokenizer(), m.stop_ids(), prompts(m)[0], sp);
  EXPECT_EQ(a.gen.token_ids, b.gen.token_ids);
  EXPECT_GT(a.metrics.draft_tokens_proposed(), 0);
}

// Sets DSPARK_DEVICE_FEATURES=1 while alive: the GPU drafters built then read device rows.
struct device_features_on {
  device_features_on() { setenv("DSPARK_DEVICE_FEATURES", "1", 1); }
  ~device_features_on() { unsetenv("DSPARK_DEVICE_FEATURES"); }
};

// The rows a GPU drafter gathers from the target's device memory (feature_staging.h) are the
// rows the host path uploads: two requests with the same prompt, one given its features on the
// host and one in a device buffer (padded layer stride, rows at an offset), draft the same
// logits. The buffer is overwritten on the "target's" stream right after
// before_target_forward(), as the target's next forward does: the gather comes first.
TEST(CudaDrafters, DeviceFeatureRowsDraftLikeHostRows) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  for (const char* kind : {"dspark", "eagle3"}) {
    SCOPED_TRACE(kind);
    // Small random dims the GPU kernels take (head_dim 64, widths multiples of 8) and a random
    // target head: no model needed.
    test::tiny_dims td;
    td.kind = kind;
    td.n_vocab = 512;
    td.n_embd = 128;
    td.n_head = 2;
    td.n_head_kv = 1;
    td.head_dim = 64;
    td.n_ff = 256;
    if (td.kind == "eagle3") {
      td.n_layer = 1;
      td.markov = "none";
      td.confidence = false;
    }
    const nlohmann::json j = test::tiny_config(td);
    const std::string dir = test::write_drafter_folder(std::string("devfeat_") + kind, j,
                                                       test::random_drafter_tensors(j, 5));
    const drafter_config c = load_drafter_config(dir);
    std::mt19937 hr(3);
    std::normal_distribution<float> nd(0.f, 1.f);
    std::vector<float> head_f(static_cast<size_t>(td.n_vocab * td.n_embd));
    for (float& x : head_f) x = nd(hr);
    const tensor_view head_t = test::f32_view(head_f, td.n_vocab, td.n_embd, "token_embd");
    const drafter_target_head head{head_t, head_t};
    drafter_runtime_params rp;
    rp.max_slots = 2;
    rp.max_ctx = 256;
    rp.sampled = false;
    std::unique_ptr<cuda_block_drafter> block;
    std::unique_ptr<cuda_chain_drafter> chain;
    {
      const device_features_on on;
      std::string why;
      if (c.block_drafter()) {
        ASSERT_TRUE(cuda_block_drafter_supports(c, &why)) << why;
        block = std::make_unique<cuda_block_drafter>(c, load_drafter_weights(dir, c), head, rp);
      } else {
        ASSERT_TRUE(cuda_chain_drafter_supports(c, &why)) << why;
        chain = std::make_unique<cuda_chain_drafter>(c, load_drafter_weights(dir, c), head, rp);
      }
    }
    drafter& d = block ? static_cast<drafter&>(*block) : static_cast<drafter&>(*chain);
    ASSERT_TRUE(d.caps().reads_device_features);
    if (block) block->set_record(true);
    if (chain) chain->set_record(true);
    const int32_t L = static_cast<int32_t>(c.target_layers.size()), G = c.block_size, P = 21, row0 = 3;
    const int64_t E = c.target_n_embd, S = (P + 8) * E;  // S: floats between layers on the device
    std::mt19937 rng(11);
    std::vector<int32_t> ctx;
    for (int32_t t = 0; t < P; ++t) ctx.push_back(static_cast<int32_t>(rng() % td.n_vocab));
    const feature_rows f = random_features(rng, L, P, E);
    float* dev = nullptr;
    DSPARK_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&dev), static_cast<size_t>(L * S) * sizeof(float)));
    for (int32_t l = 0; l < L; ++l)
      DSPARK_CUDA_CHECK(cudaMemcpy(dev + l * S + row0 * E, f.data.data() + static_cast<int64_t>(l) * P * E,
                                   static_cast<size_t>(P * E) * sizeof(float), cudaMemcpyHostToDevice));
    cudaStream_t target = nullptr;
    DSPARK_CUDA_CHECK(cudaStreamCreate(&target));
    commit_info host, device;
    host.features = f.view(L, P, E);
    device.features.device = dev;
    device.features.device_layer_stride = S;
    device.features.device_stream = target;
    device.features.row0 = row0;
    device.features.n_layers = L;
    device.features.n_rows = P;
    device.features.n_embd = E;
    d.begin(0, ctx);
    d.on_commit(0, host);
    d.begin(1, ctx);
    d.on_commit(1, device);
    d.before_target_forward();
    DSPARK_CUDA_CHECK(cudaMemsetAsync(dev, 0xff, static_cast<size_t>(L * S) * sizeof(float), target));  // NaNs
    ctx.push_back(static_cast<int32_t>(rng() % td.n_vocab));  // x0
    draft_batch_params bp;
    bp.max_slots = 2;
    bp.gamma_max = G;
    bp.n_vocab = c.target_n_vocab;
    bp.kind = draft_dist_kind::one_hot;
    draft_batch out(bp);
    propose_request reqs[2];
    for (int i = 0; i < 2; ++i) {
      reqs[i].slot = i;
      reqs[i].max_drafts = G;
      reqs[i].context = ctx;
    }
    d.propose(reqs, out);
    DSPARK_CUDA_CHECK(cudaStreamSynchronize(target));
    ASSERT_EQ(out.length(0), G);
    ASSERT_EQ(out.length(1), G);
    for (int32_t k = 0; k < G; ++k) EXPECT_EQ(out.tokens(1)[k], out.tokens(0)[k]) << "draft " << k;
    const std::vector<float> a = block ? block->recorded_logits(0) : chain->recorded_logits(0);
    const std::vector<float> b = block ? block->recorded_logits(1) : chain->recorded_logits(1);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_LT(rel_l2(b, a), 1e-6) << "the device rows' drafts differ from the host rows'";
    for (float x : b) ASSERT_TRUE(std::isfinite(x)) << "a row read after the overwrite";
    DSPARK_CUDA_CHECK(cudaStreamDestroy(target));
    DSPARK_CUDA_CHECK(cudaFree(dev));
  }
}

// Speculative decoding on the CUDA target with device features: the target keeps its captured
// rows on the GPU (no host copy) and the output is plain decoding's, two requests at a time.
TEST(CudaDrafters, DeviceFeaturesDecodeLosslesslyWithoutTheHostCopy) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  DSPARK_REQUIRE_MODEL(path);
  const model& m = *shared_model();
  cuda::cuda_backend be(m.config(), m.weights(), target_options());
  struct watch final : test::forwarding_backend {
    using forwarding_backend::forwarding_backend;
    forward_output forward(const forward_batch& b) override {
      const forward_output o = forwarding_backend::forward(b);
      if (!b.capture_layers.empty()) {
        ++capturing;
        device_only += b.hidden_on_device && o.hidden == nullptr && o.hidden_device != nullptr;
      }
      return o;
    }
    int64_t capturing = 0, device_only = 0;
  } w(be);
  drafter_runtime_params rp;
  rp.max_ctx = 512;
  rp.max_slots = 2;
  sampling_params sp;
  sp.max_tokens = 32;
  std::vector<std::vector<int32_t>> plain;
  for (const auto& p : prompts(m)) plain.push_back(generate(m, be, p, sp).token_ids);
  for (const char* kind : {"dspark", "eagle3"}) {
    SCOPED_TRACE(kind);
    std::unique_ptr<drafter> d;
    {
      const device_features_on on;
      std::string why;
      d = load_trained_drafter_cuda(test::random_target_drafter(m, kind), m.config(), m.weights(), rp, std::nullopt, &why);
      ASSERT_TRUE(d) << why;
    }
    w.capturing = w.device_only = 0;
    fixed_gamma_policy pol(4);
    spec_decoder dec(w, d.get(), pol, &m.tokenizer(), m.stop_ids(), {.max_requests = 2});
    const std::vector<spec_result> r = spec_generate_all(dec, prompts(m), sp, false);
    for (size_t i = 0; i < r.size(); ++i) {
      EXPECT_EQ(r[i].gen.token_ids, plain[i]) << "prompt " << i;
      EXPECT_GT(r[i].metrics.draft_tokens_proposed(), 0);
    }
    EXPECT_GT(w.capturing, 10);
    EXPECT_EQ(w.device_only, w.capturing);
  }
}

// Trained drafters accept as many drafts on the GPU as on the CPU: same greedy outputs, the
// acceptance length within a bf16 margin. DSPARK_TRAINED_DRAFTERS names a folder holding
// exported drafters (dspark/, dflash/, eagle3/, mtp1/; any present are checked).
TEST(CudaDrafters, TrainedDraftersAcceptLikeTheCpuOnes) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  DSPARK_REQUIRE_MODEL(path);
  const char* root = std::getenv("DSPARK_TRAINED_DRAFTERS");
  if (root == nullptr || *root == '\0') GTEST_SKIP() << "DSPARK_TRAINED_DRAFTERS (exported drafter folders) not set";
  const model& m = *shared_model();
  cuda::cuda_backend be(m.config(), m.weights(), target_options());
  drafter_runtime_params rp;
  rp.max_ctx = 512;
  int checked = 0;
  for (const char* kind : {"dspark", "dflash", "eagle3", "mtp1"}) {
    const std::string dir = std::string(root) + "/" + kind;
    if (!std::filesystem::is_directory(dir)) continue;
    SCOPED_TRACE(kind);
    std::string why;
    std::unique_ptr<drafter> gpu = load_trained_drafter_cuda(dir, m.config(), m.weights(), rp, std::nullopt, &why);
    ASSERT_TRUE(gpu) << why;
    std::unique_ptr<drafter> cpu = load_trained_drafter(dir, m.config(), m.weights(), rp);
    sampling_params sp;
    sp.max_tokens = 64;
    fixed_gamma_policy pol(load_drafter_config(dir).block_size);
    double acc_gpu = 0, acc_cpu = 0, rounds_gpu = 0, rounds_cpu = 0;
    for (const auto& p : prompts(m)) {
      const spec_result a = spec_generate(be, gpu.get(), pol, &m.tokenizer(), m.stop_ids(), p, sp);
      const spec_result b = spec_generate(be, cpu.get(), pol, &m.tokenizer(), m.stop_ids(), p, sp);
      EXPECT_EQ(a.gen.token_ids, b.gen.token_ids);
      acc_gpu += static_cast<double>(a.metrics.draft_tokens_accepted());
      acc_cpu += static_cast<double>(b.metrics.draft_tokens_accepted());
      rounds_gpu += static_cast<double>(a.metrics.verify_steps());
      rounds_cpu += static_cast<double>(b.metrics.verify_steps());
    }
    const double tau_gpu = 1 + acc_gpu / rounds_gpu, tau_cpu = 1 + acc_cpu / rounds_cpu;
    std::printf("trained %s, 3 prompts x 64 tokens: tau GPU %.3f, CPU %.3f\n", kind, tau_gpu, tau_cpu);
    EXPECT_NEAR(tau_gpu, tau_cpu, 0.1 * tau_cpu);
    EXPECT_GT(acc_gpu, 0);
    ++checked;
  }
  EXPECT_GT(checked, 0) << "no drafter folders under " << root;
}

}  // namespace
}  // namespace dspark

// The CUDA backend against Hugging Face transformers (float64) on the real SmolLM2-135M-Instruct
// (Q4_1 GGUF, decoded to bf16 on the GPU), with the fixtures of tests/golden (see
// tests/engine/test_golden_smollm2.cpp for how they were made). Needs the default model
// (DSPARK_MODEL); skips without it or without a device.
//
// Tolerance: the GPU keeps weights and activations between GEMMs in bf16 (relative rounding
// 2^-9), so logits move by up to kBf16LogitTol over the reference's top 20. Greedy runs (all 22
// prompts decoded together as one batch, so batch-size buckets, padding and graph replay are
// exercised) must equal the reference token for token, a runner-up pick being accepted only
// where the reference's own top-2 gap is under the tolerance (then that run stops being checked).
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "engine/cuda/cuda_backend.h"
#include "engine/model.h"
#include "tests/cuda/cuda_test_util.h"
#include "tests/test_support.h"

namespace dspark::cuda::test {
namespace {

constexpr double kBf16LogitTol = 0.5;

nlohmann::json read_fixture(const std::string& name) {
  std::ifstream in(dspark::test::data_path("golden/" + name));
  EXPECT_TRUE(in.good()) << "missing fixture tests/golden/" << name;
  return nlohmann::json::parse(in);
}

int32_t argmax_row(const float* row, int64_t n) {
  int32_t best = 0;
  for (int64_t i = 1; i < n; ++i)
    if (row[i] > row[best]) best = static_cast<int32_t>(i);
  return best;
}

cuda_backend_options golden_opts() {
  cuda_backend_options o;
  o.n_seq_max = 32;
  o.n_ctx = 512;
  o.max_tokens_per_step = 2048;
  o.kv_blocks = 32 * 32;
  return o;
}

TEST(CudaGoldenSmolLM2, LogitsMatchTransformers) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  DSPARK_REQUIRE_MODEL(path);
  const model m = load_model(path, {.load_tokenizer = false});
  cuda_backend be(m.config(), m.weights(), golden_opts());
  const auto fx = read_fixture("smollm2_logits.json");
  const int64_t V = m.config().n_vocab;
  double worst = 0;
  int mismatches = 0;
  for (const auto& c : fx["cases"]) {
    const auto ids = c["input_ids"].get<std::vector<int32_t>>();
    const int32_t seq = *be.open_sequence();
    const batch_sequence bs{seq, static_cast<int32_t>(ids.size()), static_cast<int32_t>(ids.size())};
    const forward_output out = be.forward({ids, {&bs, 1}, {}});
    ASSERT_EQ(out.status, forward_status::ok);
    for (size_t pos = 0; pos < ids.size(); ++pos) {
      const float* row = out.logits + pos * V;
      const auto& top_ids = c["top_ids"][pos];
      const auto& top_logits = c["top_logits"][pos];
      for (size_t k = 0; k < top_ids.size(); ++k)
        worst = std::max(worst, std::fabs(row[top_ids[k].get<int>()] - top_logits[k].get<double>()));
      const double gap = top_logits[0].get<double>() - top_logits[1].get<double>();
      if (argmax_row(row, V) != top_ids[0].get<int>() && gap > kBf16LogitTol) ++mismatches;
    }
    be.free_sequence(seq);
  }
  std::printf("cuda: max |logit error| over top-20 at all positions = %.4f (tol %.2f)\n", worst, kBf16LogitTol);
  EXPECT_LE(worst, kBf16LogitTol);
  EXPECT_EQ(mismatches, 0);
}

TEST(CudaGoldenSmolLM2, BatchedGreedyMatchesTransformers) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  DSPARK_REQUIRE_MODEL(path);
  const model m = load_model(path, {.load_tokenizer = false});
  cuda_backend be(m.config(), m.weights(), golden_opts());
  const auto fx = read_fixture("smollm2_greedy.json");
  const auto& cases = fx["cases"];
  const int64_t V = m.config().n_vocab;
  const size_t n = cases.size();
  std::vector<int32_t> seqs(n), toks;
  std::vector<batch_sequence> batch;
  for (size_t i = 0; i < n; ++i) {
    seqs[i] = *be.open_sequence();
    const auto ids = cases[i]["input_ids"].get<std::vector<int32_t>>();
    toks.insert(toks.end(), ids.begin(), ids.end());
    batch.push_back({seqs[i], static_cast<int32_t>(ids.size()), 1});
  }
  forward_output out = be.forward({toks, batch, {}});
  std::vector<bool> checking(n, true);
  int tie_divergences = 0;
  const size_t steps = cases[0]["output_ids"].size();
  for (size_t step = 0; step < steps; ++step) {
    ASSERT_EQ(out.status, forward_status::ok);
    std::vector<int32_t> next(n);
    for (size_t i = 0; i < n; ++i) {
      next[i] = argmax_row(out.logits + i * V, V);
      const auto expected = cases[i]["output_ids"][step].get<int32_t>();
      if (checking[i] && next[i] != expected) {
        const double gap = cases[i]["top2_gap"][step].get<double>();
        const int32_t runner_up = cases[i]["top2_ids"][step][1].get<int32_t>();
        EXPECT_TRUE(gap < kBf16LogitTol && next[i] == runner_up)
            << "prompt " << i << " step " << step << ": got " << next[i] << ", reference " << expected
            << " (reference top-2 gap " << gap << ")";
        checking[i] = false;
        ++tie_divergences;
      }
    }
    batch.clear();
    for (size_t i = 0; i < n; ++i) batch.push_back({seqs[i], 1, 1});
    out = be.forward({next, batch, {}});
  }
  std::printf("cuda greedy (22 prompts batched): %zu of %zu identical for %zu tokens, %d diverged at a tie\n",
              n - tie_divergences, n, steps, tie_divergences);
}

}  // namespace
}  // namespace dspark::cuda::test

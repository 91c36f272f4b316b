// The CPU forward pass against an independent double-precision reference on tiny random
// models (Llama, Qwen2, Qwen3, Llama 3 scaling, tied embeddings), GGUF vs safetensors, and the
// ragged-batch invariants: chunked == token by token across sequences, rollback == never
// decoded, fragmented paged KV == contiguous.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "common/error.h"
#include "engine/cpu_backend.h"
#include "engine/model.h"
#include "tests/engine/test_model_gguf_writer.h"
#include "tests/engine/test_model_reference.h"
#include "tests/engine/test_model_tiny.h"

namespace dspark {
namespace {

using test::tiny_spec;

const model_load_options k_no_tokenizer{.load_tokenizer = false};

cpu_backend_options tiny_options(int32_t block_size = 16, int32_t n_seq = 4) {
  cpu_backend_options o;
  o.n_threads = 2;
  o.n_seq_max = n_seq;
  o.n_ctx = 64;
  o.kv_block_size = block_size;
  o.max_tokens_per_step = 32;
  o.precision = matmul_precision::f32_activations;
  return o;
}

std::vector<int32_t> test_tokens(size_t n, int32_t n_vocab, int32_t salt = 0) {
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>((i * 37 + 11 + salt * 13) % n_vocab);
  return t;
}

// Runs `tokens` on a fresh sequence as one chunk and returns every row's logits.
std::vector<std::vector<float>> run_chunk(backend& be, const std::vector<int32_t>& tokens) {
  const int32_t seq = *be.open_sequence();
  const batch_sequence s{seq, static_cast<int32_t>(tokens.size()), static_cast<int32_t>(tokens.size())};
  const forward_output out = be.forward({tokens, {&s, 1}, {}});
  EXPECT_EQ(out.status, forward_status::ok);
  const int64_t V = be.limits().n_vocab;
  std::vector<std::vector<float>> rows;
  for (int64_t r = 0; r < out.n_rows; ++r) rows.emplace_back(out.logits + r * V, out.logits + (r + 1) * V);
  be.free_sequence(seq);
  return rows;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  return m;
}

struct arch_case {
  const char* name;
  tiny_spec spec;
};
void PrintTo(const arch_case& c, std::ostream* os) { *os << c.name; }

tiny_spec spec_for(const std::string& arch, bool tied = false, bool llama3 = false) {
  tiny_spec s;
  s.arch = arch;
  s.tied = tied;
  s.llama3_scaling = llama3;
  if (arch == "Qwen3ForCausalLM") s.head_dim = 16;  // != n_embd / n_head, as Qwen3 allows
  return s;
}

class ForwardVsReference : public ::testing::TestWithParam<arch_case> {};

TEST_P(ForwardVsReference, LogitsMatchDoubleReference) {
  const tiny_spec& s = GetParam().spec;
  const auto w = test::make_tiny_weights(s);
  const std::string dir = test::write_tiny_hf(test::scratch_dir(GetParam().name), s, w);
  const model m = load_model(dir, k_no_tokenizer);
  cpu_backend be(m.config(), m.weights(), tiny_options());
  const auto tokens = test_tokens(20, static_cast<int32_t>(s.n_vocab));
  const auto got = run_chunk(be, tokens);
  const auto ref = test::reference_forward(s, w, tokens);
  ASSERT_EQ(got.size(), tokens.size());
  double worst = 0, scale = 0;
  for (size_t t = 0; t < tokens.size(); ++t)
    for (int64_t v = 0; v < s.n_vocab; ++v) {
      worst = std::max(worst, std::abs(got[t][v] - ref.logits[t][v]));
      scale = std::max(scale, std::abs(ref.logits[t][v]));
    }
  EXPECT_GT(scale, 1.0) << "degenerate test model";
  EXPECT_LT(worst, 2e-4 * scale) << "max |engine - reference| " << worst << ", logit scale " << scale;
}

INSTANTIATE_TEST_SUITE_P(
    Archs, ForwardVsReference,
    ::testing::Values(arch_case{"llama", spec_for("LlamaForCausalLM")},
                      arch_case{"llama_tied", spec_for("LlamaForCausalLM", true)},
                      arch_case{"llama3_scaling", spec_for("LlamaForCausalLM", false, true)},
                      arch_case{"mistral", spec_for("MistralForCausalLM")},
                      arch_case{"qwen2_bias", spec_for("Qwen2ForCausalLM", true)},
                      arch_case{"qwen3_qk_norm", spec_for("Qwen3ForCausalLM")}),
    [](const auto& info) { return std::string(info.param.name); });

TEST(Forward, HiddenCaptureMatchesReferenceResidualStream) {
  const tiny_spec s = spec_for("LlamaForCausalLM");
  const auto w = test::make_tiny_weights(s);
  const model m = load_model(test::write_tiny_hf(test::scratch_dir("capture"), s, w), k_no_tokenizer);
  cpu_backend be(m.config(), m.weights(), tiny_options());
  const auto tokens = test_tokens(6, 64);
  const auto ref = test::reference_forward(s, w, tokens);
  const int32_t seq = *be.open_sequence();
  const batch_sequence bs{seq, 6, 2};  // hidden states of the last two tokens
  const std::vector<int32_t> layers = {1, 0};
  const forward_output out = be.forward({tokens, {&bs, 1}, layers});
  ASSERT_NE(out.hidden, nullptr);
  ASSERT_EQ(out.n_rows, 2);
  for (size_t li = 0; li < layers.size(); ++li)
    for (int64_t r = 0; r < 2; ++r)
      for (int64_t i = 0; i < s.n_embd; ++i)
        EXPECT_NEAR(out.hidden[(li * 2 + r) * s.n_embd + i], ref.hidden[layers[li]][4 + r][i], 1e-4)
            << "layer " << layers[li] << " row " << r << " dim " << i;
}

struct gguf_case {
  const char* name;
  std::string hf_arch;
  std::string gguf_arch;
  bool llama3;
};
void PrintTo(const gguf_case& c, std::ostream* os) { *os << c.name; }

class GgufVsSafetensors : public ::testing::TestWithParam<gguf_case> {};

// The same weights stored as GGUF (llama: permuted Q/K, interleaved RoPE; llama3 scaling as a
// rope_freqs tensor) and as safetensors (neox RoPE, rope_scaling) give the same logits.
TEST_P(GgufVsSafetensors, SameLogits) {
  const tiny_spec s = spec_for(GetParam().hf_arch, false, GetParam().llama3);
  const auto w = test::make_tiny_weights(s);
  const std::string dir = test::scratch_dir(std::string("gguf_") + GetParam().name);
  const model hf = load_model(test::write_tiny_hf(dir + "/hf", s, w), k_no_tokenizer);
  test::write_tiny_gguf(dir + "/tiny.gguf", s, w, GetParam().gguf_arch);
  const model gg = load_model(dir + "/tiny.gguf", k_no_tokenizer);
  EXPECT_EQ(gg.config().rope, GetParam().gguf_arch == "llama" ? rope_style::normal : rope_style::neox);
  EXPECT_EQ(hf.config().rope, rope_style::neox);
  cpu_backend be_hf(hf.config(), hf.weights(), tiny_options());
  cpu_backend be_gg(gg.config(), gg.weights(), tiny_options());
  const auto tokens = test_tokens(24, 64);
  const auto a = run_chunk(be_hf, tokens), b = run_chunk(be_gg, tokens);
  for (size_t t = 0; t < tokens.size(); ++t) EXPECT_LT(max_abs_diff(a[t], b[t]), 1e-4) << "position " << t;
}

INSTANTIATE_TEST_SUITE_P(Formats, GgufVsSafetensors,
                         ::testing::Values(gguf_case{"llama", "LlamaForCausalLM", "llama", false},
                                           gguf_case{"llama3", "LlamaForCausalLM", "llama", true},
                                           gguf_case{"qwen2", "Qwen2ForCausalLM", "qwen2", false},
                                           gguf_case{"qwen3", "Qwen3ForCausalLM", "qwen3", false}),
                         [](const auto& info) { return std::string(info.param.name); });

// Fixture: a tiny Qwen2 model (biases exercise every code path) loaded once.
class RaggedBatch : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    spec_ = new tiny_spec(spec_for("Qwen2ForCausalLM"));
    model_ = new model(load_model(
        test::write_tiny_hf(test::scratch_dir("ragged"), *spec_, test::make_tiny_weights(*spec_)),
        k_no_tokenizer));
  }
  static void TearDownTestSuite() {
    delete model_;
    delete spec_;
  }
  static tiny_spec* spec_;
  static model* model_;
};
tiny_spec* RaggedBatch::spec_ = nullptr;
model* RaggedBatch::model_ = nullptr;

// Logits of each token of `tokens` fed one forward at a time on a fresh sequence.
std::vector<std::vector<float>> one_at_a_time(backend& be, const std::vector<int32_t>& tokens) {
  const int32_t seq = *be.open_sequence();
  std::vector<std::vector<float>> rows;
  for (int32_t t : tokens) {
    const batch_sequence s{seq, 1, 1};
    const forward_output out = be.forward({std::span<const int32_t>(&t, 1), {&s, 1}, {}});
    rows.emplace_back(out.logits, out.logits + be.limits().n_vocab);
  }
  be.free_sequence(seq);
  return rows;
}

TEST_F(RaggedBatch, MixedChunksAcrossSequencesEqualTokenByToken) {
  // Three sequences, two steps with different chunk sizes per sequence; every row asked for.
  const std::vector<std::vector<int32_t>> plan_step1 = {test_tokens(5, 64, 1), test_tokens(1, 64, 2),
                                                        test_tokens(3, 64, 3)};
  const std::vector<std::vector<int32_t>> plan_step2 = {test_tokens(1, 64, 4), test_tokens(4, 64, 5),
                                                        test_tokens(2, 64, 6)};
  cpu_backend be(model_->config(), model_->weights(), tiny_options(4));  // small blocks: paging
  std::vector<int32_t> seqs;
  for (int i = 0; i < 3; ++i) seqs.push_back(*be.open_sequence());
  std::vector<std::vector<std::vector<float>>> got(3);
  for (const auto* plan : {&plan_step1, &plan_step2}) {
    std::vector<int32_t> tokens;
    std::vector<batch_sequence> bs;
    for (int i = 0; i < 3; ++i) {
      tokens.insert(tokens.end(), (*plan)[i].begin(), (*plan)[i].end());
      const auto n = static_cast<int32_t>((*plan)[i].size());
      bs.push_back({seqs[i], n, n});
    }
    const forward_output out = be.forward({tokens, bs, {}});
    ASSERT_EQ(out.status, forward_status::ok);
    int64_t r = 0;
    for (int i = 0; i < 3; ++i)
      for (size_t j = 0; j < (*plan)[i].size(); ++j, ++r)
        got[i].emplace_back(out.logits + r * 64, out.logits + (r + 1) * 64);
  }
  EXPECT_EQ(be.sequence_length(seqs[0]), 6);
  EXPECT_EQ(be.sequence_length(seqs[1]), 5);
  EXPECT_EQ(be.sequence_length(seqs[2]), 5);

  cpu_backend single(model_->config(), model_->weights(), tiny_options(16, 1));
  for (int i = 0; i < 3; ++i) {
    std::vector<int32_t> all = plan_step1[i];
    all.insert(all.end(), plan_step2[i].begin(), plan_step2[i].end());
    const auto want = one_at_a_time(single, all);
    ASSERT_EQ(got[i].size(), want.size());
    for (size_t t = 0; t < want.size(); ++t)
      EXPECT_LT(max_abs_diff(got[i][t], want[t]), 2e-5) << "sequence " << i << " token " << t;
  }
}

TEST_F(RaggedBatch, LastRowOnlyAndNoRows) {
  cpu_backend be(model_->config(), model_->weights(), tiny_options());
  const auto tokens = test_tokens(7, 64);
  const auto all = run_chunk(be, tokens);
  const int32_t a = *be.open_sequence(), b = *be.open_sequence();
  std::vector<int32_t> both = tokens;
  both.insert(both.end(), tokens.begin(), tokens.end());
  const batch_sequence bs[2] = {{a, 7, 0}, {b, 7, 1}};  // no logits for a, last row for b
  const forward_output out = be.forward({both, bs, {}});
  ASSERT_EQ(out.n_rows, 1);
  EXPECT_LT(max_abs_diff(std::vector<float>(out.logits, out.logits + 64), all.back()), 2e-5);
  EXPECT_EQ(be.sequence_length(a), 7);
}

TEST_F(RaggedBatch, RollbackThenRedecodeEqualsNeverDecoded) {
  for (int32_t block : {4, 16}) {
    cpu_backend be(model_->config(), model_->weights(), tiny_options(block));
    const auto prefix = test_tokens(6, 64, 1), draft = test_tokens(5, 64, 2), real = test_tokens(3, 64, 3);
    const int32_t seq = *be.open_sequence();
    const batch_sequence p{seq, 6, 0};
    be.forward({prefix, {&p, 1}, {}});
    const batch_sequence d{seq, 5, 5};  // rejected draft: positions 6..10, across a block edge
    be.forward({draft, {&d, 1}, {}});
    be.truncate(seq, 6);
    EXPECT_EQ(be.sequence_length(seq), 6);
    const batch_sequence r{seq, 3, 3};
    const forward_output out = be.forward({real, {&r, 1}, {}});
    std::vector<int32_t> all = prefix;
    all.insert(all.end(), real.begin(), real.end());
    cpu_backend fresh(model_->config(), model_->weights(), tiny_options(block));
    const auto want = run_chunk(fresh, all);
    for (int t = 0; t < 3; ++t)
      EXPECT_LT(max_abs_diff(std::vector<float>(out.logits + t * 64, out.logits + (t + 1) * 64), want[6 + t]), 2e-5)
          << "block size " << block << " token " << t;
  }
}

TEST_F(RaggedBatch, OutOfKvIsAStatusAndChangesNothing) {
  cpu_backend_options o = tiny_options(4, 2);
  o.kv_blocks = 3;  // 12 positions in all
  cpu_backend be(model_->config(), model_->weights(), o);
  const int32_t a = *be.open_sequence(), b = *be.open_sequence();
  const auto t8 = test_tokens(8, 64);
  const batch_sequence sa{a, 8, 1};
  ASSERT_EQ(be.forward({t8, {&sa, 1}, {}}).status, forward_status::ok);  // 2 blocks
  const batch_sequence both[2] = {{a, 2, 1}, {b, 2, 1}};                 // needs 1 + 1 blocks
  std::vector<int32_t> t4 = test_tokens(4, 64);
  EXPECT_EQ(be.forward({t4, both, {}}).status, forward_status::out_of_kv);
  EXPECT_EQ(be.sequence_length(a), 8);
  EXPECT_EQ(be.sequence_length(b), 0);
  const batch_sequence only_b{b, 2, 1};
  EXPECT_EQ(be.forward({std::span<const int32_t>(t4.data(), 2), {&only_b, 1}, {}}).status, forward_status::ok);
}

TEST_F(RaggedBatch, MalformedBatchesThrow) {
  cpu_backend be(model_->config(), model_->weights(), tiny_options());
  const int32_t a = *be.open_sequence();
  const std::vector<int32_t> t = {1, 2};
  const batch_sequence twice[2] = {{a, 1, 1}, {a, 1, 1}};
  EXPECT_THROW(be.forward({t, twice, {}}), invalid_argument_error);
  const batch_sequence closed{3, 2, 1};
  EXPECT_THROW(be.forward({t, {&closed, 1}, {}}), invalid_argument_error);
  const batch_sequence too_many_rows{a, 2, 3};
  EXPECT_THROW(be.forward({t, {&too_many_rows, 1}, {}}), invalid_argument_error);
  const batch_sequence count_mismatch{a, 3, 1};
  EXPECT_THROW(be.forward({t, {&count_mismatch, 1}, {}}), invalid_argument_error);
  const std::vector<int32_t> bad_id = {1, 64};
  const batch_sequence ok{a, 2, 1};
  EXPECT_THROW(be.forward({bad_id, {&ok, 1}, {}}), invalid_argument_error);
  const std::vector<int32_t> bad_layer = {2};
  EXPECT_THROW(be.forward({t, {&ok, 1}, bad_layer}), invalid_argument_error);
  const std::vector<int32_t> twice_layer = {1, 1};
  EXPECT_THROW(be.forward({t, {&ok, 1}, twice_layer}), invalid_argument_error);
  EXPECT_EQ(be.sequence_length(a), 0);
}

}  // namespace
}  // namespace dspark

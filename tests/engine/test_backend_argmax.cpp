// Argmax rows (forward_batch::outputs, engine/backend.h) on the CPU backend: random ragged
// batches asked for argmax ids only give argmax_index() of the rows the logits path returns,
// ties included (two LM-head rows are made identical, so their logits tie exactly and the lower
// id must win); both outputs at once give the same ids and the same logits bit for bit; only
// what was asked for comes back; an unknown outputs value is rejected; greedy generate(), which
// asks for argmax ids, equals a decode loop that scans the logits itself.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/cpu_backend.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "engine/spec/verify.h"
#include "tests/engine/test_model_tiny.h"
#include "tests/test_support.h"

namespace dspark {
namespace {

constexpr int32_t kTieLow = 5, kTieHigh = 40;  // LM-head rows made identical

// A tiny random Llama whose LM-head rows kTieLow and kTieHigh are the same vector, scaled up so
// that pair holds the largest logit on a good share of rows.
const model& tie_model() {
  static const model m = [] {
    test::tiny_spec s;
    s.seed = 11;
    test::tiny_weights w = test::make_tiny_weights(s);
    std::vector<float>& head = w.at("lm_head.weight").data;
    const size_t E = static_cast<size_t>(s.n_embd);
    for (size_t j = 0; j < E; ++j) {
      head[kTieLow * E + j] *= 4.0f;
      head[kTieHigh * E + j] = head[kTieLow * E + j];
    }
    return load_model(test::write_tiny_hf(test::scratch_dir("backend_argmax"), s, w),
                      model_load_options{.load_tokenizer = false});
  }();
  return m;
}

cpu_backend make_backend(const model& m) {
  cpu_backend_options o;
  o.n_threads = 2;
  o.n_seq_max = 3;
  o.n_ctx = 128;
  o.kv_block_size = 8;
  o.max_tokens_per_step = 16;
  o.precision = matmul_precision::f32_activations;
  return cpu_backend(m.config(), m.weights(), o);
}

forward_output run(backend& be, const std::vector<int32_t>& tokens, const std::vector<batch_sequence>& seqs,
                   row_outputs outputs, int32_t n_layers = 0) {
  forward_batch b;
  b.tokens = tokens;
  b.seqs = seqs;
  b.outputs = outputs;
  const forward_output o = n_layers > 0 ? be.forward_prefix(b, n_layers) : be.forward(b);
  EXPECT_EQ(o.status, forward_status::ok);
  return o;
}

TEST(BackendArgmax, RandomRaggedBatchesMatchTheLogitsPathTiesIncluded) {
  const model& m = tie_model();
  const int64_t V = m.config().n_vocab;
  // Three backends fed the same batches: logits only, argmax only, both.
  cpu_backend a = make_backend(m), b = make_backend(m), c = make_backend(m);
  std::vector<int32_t> seqs;
  for (int i = 0; i < 3; ++i) {
    seqs.push_back(*a.open_sequence());
    ASSERT_EQ(*b.open_sequence(), seqs.back());
    ASSERT_EQ(*c.open_sequence(), seqs.back());
  }
  std::mt19937 rng(3);
  int64_t rows_seen = 0, ties_at_top = 0;
  for (int step = 0; step < 40; ++step) {
    std::vector<batch_sequence> batch;
    std::vector<int32_t> tokens;
    for (int32_t s : seqs) {
      if (rng() % 4 == 0) continue;  // this sequence sits the step out
      const int32_t n = 1 + static_cast<int32_t>(rng() % 5);
      batch.push_back({s, n, static_cast<int32_t>(rng() % (n + 1))});
      for (int32_t j = 0; j < n; ++j) tokens.push_back(static_cast<int32_t>(rng() % V));
    }
    if (batch.empty()) continue;
    // Every fourth step a layer prefix (forward_prefix) instead of the whole model; the
    // sequences are rolled back after it, as a layer-skip drafter does.
    const int32_t n_layers = step % 4 == 3 ? 1 : 0;
    const forward_output oa = run(a, tokens, batch, row_outputs::logits, n_layers);
    const forward_output ob = run(b, tokens, batch, row_outputs::argmax, n_layers);
    const forward_output oc = run(c, tokens, batch, row_outputs::logits_and_argmax, n_layers);
    ASSERT_EQ(ob.n_rows, oa.n_rows);
    ASSERT_EQ(oc.n_rows, oa.n_rows);
    EXPECT_NE(oa.logits, nullptr);
    EXPECT_EQ(oa.argmax, nullptr);
    EXPECT_EQ(ob.logits, nullptr);
    ASSERT_NE(ob.argmax, nullptr);
    ASSERT_NE(oc.logits, nullptr);
    ASSERT_NE(oc.argmax, nullptr);
    for (int64_t r = 0; r < oa.n_rows; ++r) {
      const float* row = oa.logits + r * V;
      const int32_t want = argmax_index({row, static_cast<size_t>(V)});
      EXPECT_EQ(ob.argmax[r], want) << "step " << step << " row " << r;
      EXPECT_EQ(oc.argmax[r], want) << "step " << step << " row " << r;
      EXPECT_EQ(std::memcmp(oc.logits + r * V, row, static_cast<size_t>(V) * sizeof(float)), 0)
          << "step " << step << " row " << r;
      EXPECT_NE(ob.argmax[r], kTieHigh) << "the tied higher id never wins";
      if (want == kTieLow) {
        EXPECT_EQ(row[kTieLow], row[kTieHigh]) << "identical LM-head rows tie exactly";
        ++ties_at_top;
      }
      ++rows_seen;
    }
    if (n_layers > 0)
      for (const batch_sequence& s : batch)
        for (cpu_backend* be : {&a, &b, &c}) be->truncate(s.seq_id, be->sequence_length(s.seq_id) - s.n_tokens);
  }
  EXPECT_GT(rows_seen, 100);
  EXPECT_GT(ties_at_top, 5) << "the tie case must actually be exercised";
}

TEST(BackendArgmax, UnknownOutputsValueIsRejected) {
  cpu_backend be = make_backend(tie_model());
  const int32_t seq = *be.open_sequence();
  const std::vector<int32_t> tokens = {3};
  const batch_sequence s{seq, 1, 1};
  forward_batch b;
  b.tokens = tokens;
  b.seqs = {&s, 1};
  b.outputs = static_cast<row_outputs>(7);
  EXPECT_THROW(be.forward(b), invalid_argument_error);
  EXPECT_EQ(be.sequence_length(seq), 0);
}

// Plain greedy decoding that reads the logit rows and scans them on the host.
std::vector<int32_t> greedy_from_logits(backend& be, const std::vector<int32_t>& prompt, int32_t n_new) {
  const int32_t seq = *be.open_sequence();
  const int64_t V = be.limits().n_vocab;
  const batch_sequence p{seq, static_cast<int32_t>(prompt.size()), 1};
  forward_output o = run(be, prompt, {p}, row_outputs::logits);
  std::vector<int32_t> out;
  while (static_cast<int32_t>(out.size()) < n_new) {
    out.push_back(argmax_index({o.logits, static_cast<size_t>(V)}));
    o = run(be, {out.back()}, {batch_sequence{seq, 1, 1}}, row_outputs::logits);
  }
  be.free_sequence(seq);
  return out;
}

TEST(BackendArgmax, GreedyGenerateEqualsTheLogitsScanningLoop) {
  const model& m = tie_model();
  cpu_backend be = make_backend(m);
  sampling_params sp;
  sp.max_tokens = 48;
  bool saw_tie_id = false;
  for (int32_t i = 0; i < 4; ++i) {
    const std::vector<int32_t> prompt = {1, 10 + i, 20, 30 + 3 * i, kTieLow};
    const std::vector<int32_t> want = greedy_from_logits(be, prompt, sp.max_tokens);
    const generation_result got = generate(be, nullptr, {}, prompt, sp, {}, generate_options{.prefill_chunk = 3});
    EXPECT_EQ(got.token_ids, want) << "prompt " << i;
    for (int32_t t : want) saw_tie_id = saw_tie_id || t == kTieLow;
  }
  EXPECT_TRUE(saw_tie_id) << "some step must choose between the tied ids";
}

}  // namespace
}  // namespace dspark

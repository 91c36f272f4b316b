// The CUDA backend (engine/cuda/cuda_backend) against the CPU backend on the same tiny random
// model (bf16 weights held in host memory as tensor views, no model file needed), plus the
// backend contract: O(1) truncate and re-decode, out-of-KV with no state change, invalid
// batches, residual-stream capture, prefix caching (cached-prefix logits equal a cold
// prefill's, copy on write of a shared block), and argmax rows (row_outputs::argmax: the
// device's ids equal the host argmax of the logits the same batch downloads).
//
// Tolerance GPU vs CPU (f32 activations): relative L2 error per logits row <= 3e-2 (the GPU
// rounds activations to bf16 between GEMMs, the CPU keeps float32).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <thread>

#include "common/error.h"
#include "engine/cpu_backend.h"
#include "engine/cuda/cuda_backend.h"
#include "engine/spec/verify.h"
#include "models/arch/llama_weights.h"
#include "models/arch/model_config.h"
#include "tests/cuda/cuda_test_util.h"

namespace dspark::cuda::test {
namespace {

// A tiny Qwen3-like model (q/k norm, QKV bias) whose matrices live in this struct.
struct tiny_model {
  model_config cfg;
  llama_weights w;
  std::vector<std::vector<uint16_t>> store;  // bf16 bits of every matrix

  explicit tiny_model(uint32_t seed) {
    cfg.arch = model_arch::qwen3;
    cfg.n_vocab = 384;
    cfg.n_embd = 256;
    cfg.n_layer = 2;
    cfg.n_head = 4;
    cfg.n_head_kv = 2;
    cfg.head_dim = 64;
    cfg.n_ff = 320;
    cfg.n_ctx_train = 512;
    cfg.n_rot = 64;
    cfg.rope_theta = 10000.0;
    cfg.rope = rope_style::neox;
    cfg.rms_eps = 1e-6;
    cfg.qkv_bias = true;
    cfg.qk_norm = true;
    std::mt19937 rng(seed);
    store.reserve(64);
    auto mat = [&](const char* name, int64_t rows, int64_t cols) {
      const float a = 1.f / std::sqrt(static_cast<float>(cols));
      store.push_back(to_bf16(random_floats(rng, rows * cols, -a, a)));
      tensor_view t;
      t.name = name;
      t.type = dtype::bf16;
      t.shape = {rows, cols};
      t.data = reinterpret_cast<const uint8_t*>(store.back().data());
      t.n_bytes = static_cast<size_t>(rows * cols * 2);
      return t;
    };
    auto gains = [&](int64_t n) { return random_floats(rng, n, 0.8f, 1.2f); };
    const int64_t d = cfg.n_embd, q = cfg.q_dim(), kv = cfg.kv_dim();
    w.token_embd = mat("token_embd", cfg.n_vocab, d);
    store.push_back(to_bf16(random_floats(rng, cfg.n_vocab * d, -1.f, 1.f)));  // embeddings O(1)
    w.token_embd.data = reinterpret_cast<const uint8_t*>(store.back().data());
    w.output = mat("output", cfg.n_vocab, d);
    w.output_norm = gains(d);
    for (int l = 0; l < cfg.n_layer; ++l) {
      layer_weights L;
      L.attn_norm = gains(d);
      L.wq = mat("wq", q, d);
      L.wk = mat("wk", kv, d);
      L.wv = mat("wv", kv, d);
      L.wo = mat("wo", d, q);
      L.bq = random_floats(rng, q, -0.1f, 0.1f);
      L.bk = random_floats(rng, kv, -0.1f, 0.1f);
      L.bv = random_floats(rng, kv, -0.1f, 0.1f);
      L.q_norm = gains(cfg.head_dim);
      L.k_norm = gains(cfg.head_dim);
      L.ffn_norm = gains(d);
      L.w_gate = mat("w_gate", cfg.n_ff, d);
      L.w_up = mat("w_up", cfg.n_ff, d);
      L.w_down = mat("w_down", d, cfg.n_ff);
      w.layers.push_back(std::move(L));
    }
  }
};

cuda_backend_options small_opts() {
  cuda_backend_options o;
  o.n_seq_max = 4;
  o.n_ctx = 256;
  o.max_tokens_per_step = 64;
  o.max_capture_layers = 2;
  o.kv_blocks = 64;
  o.attention_split_len = 64;
  return o;
}

// The CPU backend the GPU's rows are checked against: f32 activations, small_opts()'s limits.
cpu_backend_options reference_cpu_opts(int32_t n_seq_max) {
  cpu_backend_options o;
  o.n_threads = 2;
  o.n_seq_max = n_seq_max;
  o.n_ctx = 256;
  o.max_tokens_per_step = 64;
  o.max_capture_layers = 2;
  o.kv_block_size = 16;
  o.precision = matmul_precision::f32_activations;
  return o;
}

std::vector<float> rows_of(const forward_output& o, int64_t n_vocab) {
  return std::vector<float>(o.logits, o.logits + o.n_rows * n_vocab);
}

double row_err(const std::vector<float>& a, const std::vector<float>& b, int64_t row, int64_t n) {
  std::vector<double> ref(b.begin() + row * n, b.begin() + (row + 1) * n);
  std::vector<float> got(a.begin() + row * n, a.begin() + (row + 1) * n);
  return rel_l2(got, ref);
}

TEST(cuda_backend, matches_cpu_backend_over_ragged_steps) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  const tiny_model m(3);
  cuda_backend gpu(m.cfg, m.w, small_opts());
  cpu_backend cpu(m.cfg, m.w, reference_cpu_opts(4));
  const int64_t V = m.cfg.n_vocab;
  std::mt19937 rng(8);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(V - 1));

  const int32_t a = *gpu.open_sequence(), b = *gpu.open_sequence(), c = *gpu.open_sequence();
  ASSERT_EQ(a, *cpu.open_sequence());
  ASSERT_EQ(b, *cpu.open_sequence());
  ASSERT_EQ(c, *cpu.open_sequence());
  auto both = [&](const std::vector<batch_sequence>& seqs, std::span<const int32_t> capture = {}) {
    std::vector<int32_t> toks;
    for (const auto& s : seqs)
      for (int i = 0; i < s.n_tokens; ++i) toks.push_back(tok(rng));
    const forward_batch fb{toks, seqs, capture};
    const forward_output og = gpu.forward(fb);
    const auto lg = rows_of(og, V);
    const std::vector<float> hg(og.hidden ? og.hidden : nullptr,
                                og.hidden ? og.hidden + capture.size() * og.n_rows * m.cfg.n_embd : nullptr);
    const forward_output oc = cpu.forward(fb);
    ASSERT_EQ(og.status, forward_status::ok);
    ASSERT_EQ(og.n_rows, oc.n_rows);
    const auto lc = rows_of(oc, V);
    for (int64_t r = 0; r < og.n_rows; ++r) EXPECT_LE(row_err(lg, lc, r, V), 3e-2) << "row " << r;
    if (!capture.empty()) {
      std::vector<double> hc(oc.hidden, oc.hidden + hg.size());
      EXPECT_LE(rel_l2(hg, hc), 3e-2) << "captured hidden states";
    }
  };
  both({{a, 20, 1}, {b, 9, 9}, {c, 1, 1}});             // prefill (cuBLASLt path)
  both({{a, 1, 1}, {b, 1, 1}, {c, 1, 1}});              // decode, a 3-row bucket of its own, eager
  both({{a, 1, 1}, {b, 1, 1}, {c, 1, 1}});              // captured
  both({{c, 1, 1}, {a, 1, 1}, {b, 1, 1}});              // replayed, other order
  both({{b, 5, 5}, {a, 1, 1}});                         // verify + decode (GEMV path, 6 tokens)
  const int32_t cap[] = {0, 1};
  both({{a, 3, 2}, {c, 2, 1}}, cap);                    // captures
}

// Verify steps that capture a drafter's feature layers run from a CUDA graph after their second
// occurrence; eager (use_graphs off), first-time, captured and replayed steps give the same
// logits and captured rows bit for bit, and a different layer list is a different graph.
TEST(cuda_backend, captured_steps_replay_from_graphs_bit_identically) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  const tiny_model m(5);
  cuda_backend_options go = small_opts(), eo = small_opts();
  eo.use_graphs = false;
  cuda_backend graphed(m.cfg, m.w, go), eager(m.cfg, m.w, eo);
  const int64_t V = m.cfg.n_vocab, E = m.cfg.n_embd;
  const std::vector<int32_t> prompt = {5, 17, 99, 3, 250, 7, 42, 8};
  const int32_t caps[2][2] = {{0, 1}, {1, 0}};
  int32_t sid[2], n = 0;
  for (cuda_backend* be : {&graphed, &eager}) {
    sid[n] = *be->open_sequence();
    const batch_sequence ps{sid[n++], 8, 1};
    be->forward({prompt, {&ps, 1}, {}});
  }
  for (int round = 0; round < 6; ++round) {
    const std::vector<int32_t> drafts = {11 + round, 12, 13, 14};
    const std::span<const int32_t> cap(caps[round % 2 == 0 ? 0 : 1], 2);
    std::vector<float> logits[2], hidden[2];
    int i = 0;
    for (cuda_backend* be : {&graphed, &eager}) {
      const batch_sequence vs{sid[i], 4, 4};
      const forward_output o = be->forward({drafts, {&vs, 1}, cap});
      ASSERT_EQ(o.status, forward_status::ok);
      ASSERT_EQ(o.n_hidden_rows, 4);
      logits[i].assign(o.logits, o.logits + 4 * V);
      hidden[i].assign(o.hidden, o.hidden + 2 * 4 * E);
      be->truncate(sid[i], be->sequence_length(sid[i]) - 4);  // the same step again next round
      ++i;
    }
    EXPECT_EQ(logits[0], logits[1]) << "round " << round;
    EXPECT_EQ(hidden[0], hidden[1]) << "round " << round;
  }
}

// Where graphs stop: graph_max_tokens, else DSPARK_GRAPH_MAX_TOKENS, else 128; a bad value of
// the variable is an error naming it. No device needed.
TEST(cuda_backend_options, graph_max_tokens_from_the_option_or_the_environment) {
  unsetenv("DSPARK_GRAPH_MAX_TOKENS");
  cuda_backend_options o;
  EXPECT_EQ(resolve_graph_max_tokens(o), 128);
  setenv("DSPARK_GRAPH_MAX_TOKENS", "512", 1);
  EXPECT_EQ(resolve_graph_max_tokens(o), 512);
  o.graph_max_tokens = 64;
  EXPECT_EQ(resolve_graph_max_tokens(o), 64) << "the option wins";
  o.graph_max_tokens = 0;
  for (const char* bad : {"0", "-3", "12x", "70000", " "}) {
    setenv("DSPARK_GRAPH_MAX_TOKENS", bad, 1);
    try {
      (void)resolve_graph_max_tokens(o);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const invalid_argument_error& e) {
      EXPECT_NE(std::string(e.what()).find("DSPARK_GRAPH_MAX_TOKENS"), std::string::npos) << e.what();
    }
  }
  unsetenv("DSPARK_GRAPH_MAX_TOKENS");
  o.graph_max_tokens = -1;
  EXPECT_THROW((void)resolve_graph_max_tokens(o), invalid_argument_error);
}

// With graph_max_tokens raised, a 200-token verify step runs eagerly the first time, is
// captured the second and replayed the third, bit for bit the same each time, and its rows
// match an eager backend's (own cuBLASLt choices: within bf16 tolerance).
TEST(cuda_backend, steps_past_128_tokens_replay_from_graphs_when_allowed) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  const tiny_model m(4);
  cuda_backend_options go = small_opts();
  go.max_tokens_per_step = 256;
  go.graph_max_tokens = 256;
  cuda_backend_options eo = go;
  eo.use_graphs = false;
  cuda_backend graphed(m.cfg, m.w, go), eager(m.cfg, m.w, eo);
  const int64_t V = m.cfg.n_vocab;
  std::mt19937 rng(5);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(V - 1));
  std::vector<int32_t> prompt(8), drafts(200);
  for (int32_t& t : prompt) t = tok(rng);
  for (int32_t& t : drafts) t = tok(rng);
  int32_t sid[2];
  int i = 0;
  for (cuda_backend* be : {&graphed, &eager}) {
    sid[i] = *be->open_sequence();
    const batch_sequence ps{sid[i++], 8, 1};
    ASSERT_EQ(be->forward({prompt, {&ps, 1}, {}}).status, forward_status::ok);
  }
  std::vector<float> first;
  for (int round = 0; round < 3; ++round) {  // eager, captured, replayed
    std::vector<float> rows[2];
    i = 0;
    for (cuda_backend* be : {&graphed, &eager}) {
      const batch_sequence vs{sid[i], 200, 200};
      const forward_output o = be->forward({drafts, {&vs, 1}, {}});
      ASSERT_EQ(o.status, forward_status::ok);
      rows[i].assign(o.logits, o.logits + 200 * V);
      be->truncate(sid[i], 8);
      ++i;
    }
    if (round == 0) first = rows[0];
    EXPECT_EQ(rows[0], first) << "round " << round;
    for (int32_t r = 0; r < 200; r += 17) EXPECT_LE(row_err(rows[0], rows[1], r, V), 3e-2) << "row " << r;
  }
  const graph_launch_stats st = graphed.graph_stats();
  EXPECT_GE(st.captured, 1);
  EXPECT_GE(st.replayed, 1);
}

// Decode buckets: up to gemv_max_tokens sequences a step runs exactly its rows (5 decode rows
// stay 5: the hand GEMV's cost grows with each row), so graphed steps equal eager ones bit for
// bit; past that range a step is padded to the next power of two (10 -> 16: 6 padding rows
// through cuBLASLt), and its real rows still match the CPU backend, in logits and argmax ids,
// eager, captured and replayed.
TEST(cuda_backend, decode_buckets_are_exact_in_the_gemv_range_and_padded_past_it) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  const tiny_model m(9);
  cuda_backend_options go = small_opts();
  go.n_seq_max = 16;
  go.kv_blocks = 128;
  cuda_backend_options eo = go;
  eo.use_graphs = false;
  cuda_backend graphed(m.cfg, m.w, go), eager(m.cfg, m.w, eo);
  cpu_backend cpu(m.cfg, m.w, reference_cpu_opts(16));
  const int64_t V = m.cfg.n_vocab;
  std::mt19937 rng(23);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(V - 1));
  constexpr int32_t n_seqs = 10;
  std::vector<int32_t> ids;
  for (int32_t i = 0; i < n_seqs; ++i) {
    ids.push_back(*graphed.open_sequence());
    ASSERT_EQ(ids.back(), *eager.open_sequence());
    ASSERT_EQ(ids.back(), *cpu.open_sequence());
    std::vector<int32_t> prompt(4 + i % 3);
    for (int32_t& t : prompt) t = tok(rng);
    const batch_sequence ps{ids.back(), static_cast<int32_t>(prompt.size()), 1};
    for (backend* be : std::initializer_list<backend*>{&graphed, &eager, &cpu})
      ASSERT_EQ(be->forward({prompt, {&ps, 1}, {}}).status, forward_status::ok);
  }
  auto decode = [&](int32_t n, const char* what) {
    std::vector<int32_t> tokens(n);
    for (int32_t& t : tokens) t = tok(rng);
    std::vector<batch_sequence> batch;
    for (int32_t i = 0; i < n; ++i) batch.push_back({ids[i], 1, 1});
    const forward_output og = graphed.forward({tokens, batch, {}, row_outputs::logits_and_argmax});
    const forward_output oe = eager.forward({tokens, batch, {}});
    const forward_output oc = cpu.forward({tokens, batch, {}});
    ASSERT_EQ(og.status, forward_status::ok) << what;
    ASSERT_EQ(og.n_rows, n) << what << ": padding rows must not come back";
    const auto lg = rows_of(og, V), le = rows_of(oe, V), lc = rows_of(oc, V);
    for (int32_t r = 0; r < n; ++r) {
      EXPECT_LE(row_err(lg, lc, r, V), 3e-2) << what << " row " << r;
      EXPECT_EQ(og.argmax[r], argmax_index({lg.data() + r * V, static_cast<size_t>(V)})) << what << " row " << r;
    }
    // in the GEMV range graphed and eager steps run the same rows: bit-identical
    if (n <= go.gemv_max_tokens) {
      EXPECT_EQ(lg, le) << what;
    }
  };
  for (int round = 0; round < 3; ++round) {  // eager, captured, replayed
    decode(5, "5 rows, their own bucket");
    decode(n_seqs, "10 rows, padded to 16");
  }
}

TEST(cuda_backend, truncate_then_redecode_is_bitwise_stable) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  const tiny_model m(4);
  cuda_backend gpu(m.cfg, m.w, small_opts());
  const int64_t V = m.cfg.n_vocab;
  const int32_t s = *gpu.open_sequence();
  const std::vector<int32_t> prompt = {5, 17, 99, 3, 250, 7, 42};
  const batch_sequence ps{s, 7, 1};
  gpu.forward({prompt, {&ps, 1}, {}});
  const std::vector<int32_t> drafts = {11, 12, 13};
  const batch_sequence vs{s, 3, 3};
  const auto first = rows_of(gpu.forward({drafts, {&vs, 1}, {}}), V);
  EXPECT_EQ(gpu.sequence_length(s), 10);
  gpu.truncate(s, 9);  // reject the last draft (13 at position 9)
  EXPECT_EQ(gpu.sequence_length(s), 9);
  const std::vector<int32_t> again = {13, 77};  // re-feed 13 at position 9, then a new token
  const batch_sequence as{s, 2, 2};
  const auto second = rows_of(gpu.forward({again, {&as, 1}, {}}), V);
  // Position 9 saw the same prefix and the same token: bit-identical logits.
  EXPECT_EQ(0, std::memcmp(first.data() + 2 * V, second.data(), V * 4));
  EXPECT_EQ(gpu.sequence_length(s), 11);
  EXPECT_THROW(gpu.truncate(s, 12), invalid_argument_error);
}

// Layer-skip drafting on the target's KV: a prefix forward over the first layer equals a
// one-layer model's forward bit for bit, and after truncating back, the full model continues as
// if no draft had been run.
TEST(cuda_backend, forward_prefix_equals_a_truncated_model_and_leaves_no_trace) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  const tiny_model m(6);
  model_config c1 = m.cfg;
  c1.n_layer = 1;
  llama_weights w1 = m.w;
  w1.layers.resize(1);
  cuda_backend full(m.cfg, m.w, small_opts());
  cuda_backend cut(c1, w1, small_opts());
  ASSERT_TRUE(full.supports_forward_prefix());
  const int64_t V = m.cfg.n_vocab;
  const int32_t a = *full.open_sequence(), b = *cut.open_sequence();
  const std::vector<int32_t> prompt = {5, 17, 99, 3, 250, 7, 42};
  const batch_sequence pa{a, 7, 1}, pb{b, 7, 1};
  full.forward({prompt, {&pa, 1}, {}});
  cut.forward({prompt, {&pb, 1}, {}});
  const std::vector<int32_t> next = {11};
  const batch_sequence na{a, 1, 1}, nb{b, 1, 1};
  const auto plain = rows_of(full.forward({next, {&na, 1}, {}}), V);  // reference: no drafting
  full.truncate(a, 7);
  for (int rep = 0; rep < 3; ++rep) {  // eager, then graph capture and replay of the same shape
    const auto pre = rows_of(full.forward_prefix({next, {&na, 1}, {}}, 1), V);
    const auto ref = rows_of(cut.forward({next, {&nb, 1}, {}}), V);
    EXPECT_EQ(0, std::memcmp(pre.data(), ref.data(), V * 4)) << "rep " << rep;
    full.truncate(a, 7);
    cut.truncate(b, 7);
  }
  const auto after = rows_of(full.forward({next, {&na, 1}, {}}), V);
  EXPECT_EQ(0, std::memcmp(plain.data(), after.data(), V * 4));
  const int32_t cap[] = {1};
  EXPECT_THROW(full.forward_prefix({next, {&na, 1}, cap}, 1), invalid_argument_error);
  EXPECT_THROW(full.forward_prefix({next, {&na, 1}, {}}, 3), invalid_argument_error);
}

TEST(cuda_backend, out_of_kv_changes_nothing) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  const tiny_model m(5);
  cuda_backend_options o = small_opts();
  o.kv_blocks = 4;  // 64 positions in all
  o.n_ctx = 64;
  cuda_backend gpu(m.cfg, m.w, o);
  const int32_t a = *gpu.open_sequence(), b = *gpu.open_sequence();
  std::vector<int32_t> t40(40, 1), t30(30, 2);
  const batch_sequence sa{a, 40, 1}, sb{b, 30, 1};
  EXPECT_EQ(gpu.forward({t40, {&sa, 1}, {}}).status, forward_status::ok);
  EXPECT_EQ(gpu.kv_blocks_free(), 1);
  EXPECT_EQ(gpu.forward({t30, {&sb, 1}, {}}).status, forward_status::out_of_kv);
  EXPECT_EQ(gpu.kv_blocks_free(), 1);
  EXPECT_EQ(gpu.sequence_length(b), 0);
  EXPECT_EQ(gpu.sequence_length(a), 40);
  const batch_sequence too_long{a, 30, 1};
  EXPECT_EQ(gpu.forward({t30, {&too_long, 1}, {}}).status, forward_status::out_of_kv);  // past n_ctx
  gpu.free_sequence(a);
  EXPECT_EQ(gpu.kv_blocks_free(), 4);
  EXPECT_EQ(gpu.forward({t30, {&sb, 1}, {}}).status, forward_status::ok);
}

// Every logit row of tokens[from ..) fed in chunks of `chunk` on `seq`.
std::vector<float> prefill_rows(cuda_backend& gpu, int32_t seq, const std::vector<int32_t>& tokens, size_t from,
                                size_t chunk) {
  std::vector<float> rows;
  for (size_t i = from; i < tokens.size(); i += chunk) {
    const auto n = static_cast<int32_t>(std::min(chunk, tokens.size() - i));
    const batch_sequence q{seq, n, n};
    const forward_output o = gpu.forward({std::span<const int32_t>(tokens).subspan(i, n), {&q, 1}, {}});
    EXPECT_EQ(o.status, forward_status::ok);
    const auto r = rows_of(o, gpu.limits().n_vocab);
    rows.insert(rows.end(), r.begin(), r.end());
  }
  return rows;
}

// Greedy tokens and their logit rows, n steps from the last row `last`.
std::vector<float> greedy_rows(cuda_backend& gpu, int32_t seq, std::vector<float> last, int n, std::vector<int32_t>& toks) {
  const int64_t V = gpu.limits().n_vocab;
  std::vector<float> rows;
  for (int i = 0; i < n; ++i) {
    const int32_t t = static_cast<int32_t>(std::max_element(last.begin(), last.end()) - last.begin());
    toks.push_back(t);
    const batch_sequence q{seq, 1, 1};
    last = rows_of(gpu.forward({std::span<const int32_t>(&t, 1), {&q, 1}, {}}), V);
    rows.insert(rows.end(), last.begin(), last.end());
  }
  return rows;
}

// Prefix caching on the GPU: a prompt whose first 32 positions come from another (running)
// sequence's published blocks gets a cold prefill's logits and greedy continuation bit for bit
// when every step stays on the GEMV path (chunks of <= gemv_max_tokens), and to bf16 rounding
// with cuBLASLt-sized chunks. Then a truncate into the shared region copies the block on write:
// the owner's next logits do not move.
TEST(cuda_backend, cached_prefix_logits_equal_a_cold_prefill) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  const tiny_model m(7);
  const int64_t V = m.cfg.n_vocab;
  std::vector<int32_t> shared;
  for (int32_t i = 0; i < 40; ++i) shared.push_back((i * 37 + 5) % 384);
  std::vector<int32_t> a = shared, b = shared;
  a.insert(a.end(), {1, 2, 3, 4, 5});
  b.insert(b.end(), {9, 8, 7, 6, 5, 4, 3});
  for (const size_t chunk : {size_t{8}, size_t{64}}) {
    SCOPED_TRACE("chunk " + std::to_string(chunk));
    cuda_backend gpu(m.cfg, m.w, small_opts());  // block size 16
    ASSERT_EQ(gpu.limits().kv_block_size, 16);
    const int32_t sa = *gpu.open_sequence();
    EXPECT_EQ(gpu.attach_prefix(sa, a), 0);
    prefill_rows(gpu, sa, a, 0, chunk);
    gpu.cache_prefix(sa, a);
    EXPECT_EQ(gpu.prefix_stats().cached_blocks, 2);
    const int32_t sb = *gpu.open_sequence();
    ASSERT_EQ(gpu.attach_prefix(sb, b), 32);
    EXPECT_EQ(gpu.sequence_length(sb), 32);
    EXPECT_EQ(gpu.prefix_stats().shared_refs, 2);
    const auto rows_b = prefill_rows(gpu, sb, b, 32, chunk);
    std::vector<int32_t> greedy_b;
    const auto dec_b = greedy_rows(gpu, sb, {rows_b.end() - V, rows_b.end()}, 8, greedy_b);

    cuda_backend cold(m.cfg, m.w, small_opts());
    const int32_t cb = *cold.open_sequence();
    const auto cold_rows = prefill_rows(cold, cb, b, 0, chunk);
    std::vector<int32_t> greedy_cold;
    const auto dec_cold = greedy_rows(cold, cb, {cold_rows.end() - V, cold_rows.end()}, 8, greedy_cold);
    const std::vector<float> cold_tail(cold_rows.begin() + 32 * V, cold_rows.end());
    ASSERT_EQ(rows_b.size(), cold_tail.size());
    if (chunk <= 8) {
      EXPECT_EQ(0, std::memcmp(rows_b.data(), cold_tail.data(), rows_b.size() * 4));
      EXPECT_EQ(0, std::memcmp(dec_b.data(), dec_cold.data(), dec_b.size() * 4));
      EXPECT_EQ(greedy_b, greedy_cold);
    } else {
      const std::vector<double> ref(cold_tail.begin(), cold_tail.end());
      EXPECT_LE(rel_l2(rows_b, ref), 2e-2);
    }

    // Copy on write: b rolls back into block 1 (shared with a) and writes new tokens there; a's
    // next token still sees its own K/V.
    gpu.truncate(sb, 20);
    std::vector<int32_t> other = b;
    std::fill(other.begin() + 20, other.end(), 300);
    prefill_rows(gpu, sb, other, 20, chunk);
    EXPECT_EQ(gpu.prefix_stats().shared_refs, 1);  // block 0 only
    const int32_t next = 11;
    const batch_sequence qa{sa, 1, 1};
    const auto after = rows_of(gpu.forward({std::span<const int32_t>(&next, 1), {&qa, 1}, {}}), V);
    cuda_backend ref(m.cfg, m.w, small_opts());
    const int32_t ra = *ref.open_sequence();
    prefill_rows(ref, ra, a, 0, chunk);
    const batch_sequence qr{ra, 1, 1};
    const auto want = rows_of(ref.forward({std::span<const int32_t>(&next, 1), {&qr, 1}, {}}), V);
    EXPECT_EQ(0, std::memcmp(after.data(), want.data(), V * 4));
    gpu.free_sequence(sa);
    gpu.free_sequence(sb);
    EXPECT_EQ(gpu.kv_blocks_free(), 64);  // cached blocks count as free
  }
}

// Keeps the default stream busy from a second thread while alive: 100 ms host callbacks back
// to back, so work queued there waits up to 100 ms (as when other processes share the GPU).
class busy_default_stream {
 public:
  busy_default_stream()
      : thread_([this] {
          const cudaHostFn_t nap = [](void*) { std::this_thread::sleep_for(std::chrono::milliseconds(100)); };
          while (!stop_.load())
            if (cudaLaunchHostFunc(nullptr, nap, nullptr) != cudaSuccess || cudaStreamSynchronize(nullptr) != cudaSuccess)
              return;
        }) {}
  ~busy_default_stream() {
    stop_ = true;
    thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// The backend zeroes its KV pool and the runner's residual buffers at construction and then
// runs every step on its own non-blocking stream, which does not wait for the default stream.
// A zeroing left queued on a busy default stream lands after the first prefill and wipes its
// K/V, and the decode steps after it go wrong (the suspected cause of
// cached_prefix_logits_equal_a_cold_prefill failing under `ctest -L cuda -j4`). Every row must
// equal a run of the same steps on an idle default stream, bit for bit.
TEST(cuda_backend, a_busy_default_stream_does_not_delay_the_zeroing_past_the_first_step) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  const tiny_model m(9);
  const int64_t V = m.cfg.n_vocab;
  std::vector<int32_t> prompt;
  for (int32_t i = 0; i < 40; ++i) prompt.push_back((i * 53 + 11) % 384);
  cuda_backend quiet(m.cfg, m.w, small_opts());  // also loads every kernel before the busy run
  const int32_t qs = *quiet.open_sequence();
  const std::vector<float> want_prefill = prefill_rows(quiet, qs, prompt, 0, 64);  // one cuBLASLt step
  std::vector<int32_t> want_toks;
  const std::vector<float> want_dec = greedy_rows(quiet, qs, {want_prefill.end() - V, want_prefill.end()}, 8, want_toks);

  std::optional<cuda_backend> gpu;
  int32_t gs = -1;
  std::vector<float> got_prefill;
  {
    const busy_default_stream busy;
    gpu.emplace(m.cfg, m.w, small_opts());
    gs = *gpu->open_sequence();
    got_prefill = prefill_rows(*gpu, gs, prompt, 0, 64);
  }
  DSPARK_CUDA_CHECK(cudaDeviceSynchronize());  // whatever was still queued has landed now
  std::vector<int32_t> got_toks;
  const std::vector<float> got_dec = greedy_rows(*gpu, gs, {got_prefill.end() - V, got_prefill.end()}, 8, got_toks);
  ASSERT_EQ(got_prefill.size(), want_prefill.size());
  EXPECT_EQ(0, std::memcmp(got_prefill.data(), want_prefill.data(), want_prefill.size() * 4));
  EXPECT_EQ(0, std::memcmp(got_dec.data(), want_dec.data(), want_dec.size() * 4));
  EXPECT_EQ(got_toks, want_toks);
}

// The device is checked and made current before anything is created on it (a stream belongs to
// the device current at its creation): an ordinal past the last device is a clear error, and a
// valid one is current once the backend exists. The rejected ordinal leaves no CUDA error behind
// for the next backend's first kernel launch to report.
TEST(cuda_backend, checks_and_selects_its_device_before_creating_state) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  const tiny_model m(5);
  int n_dev = 0;
  DSPARK_CUDA_CHECK(cudaGetDeviceCount(&n_dev));
  cuda_backend_options bad = small_opts();
  bad.device = n_dev;
  EXPECT_THROW(cuda_backend(m.cfg, m.w, bad), invalid_argument_error);
  bad.device = -1;
  EXPECT_THROW(cuda_backend(m.cfg, m.w, bad), invalid_argument_error);
  cuda_backend_options last = small_opts();
  last.device = n_dev - 1;
  cuda_backend gpu(m.cfg, m.w, last);
  int current = -1;
  DSPARK_CUDA_CHECK(cudaGetDevice(&current));
  EXPECT_EQ(current, n_dev - 1);
  const int32_t s = *gpu.open_sequence();
  const int32_t tok = 7;
  const batch_sequence one{s, 1, 1};
  EXPECT_EQ(gpu.forward({{&tok, 1}, {&one, 1}, {}}).status, forward_status::ok);
}

TEST(cuda_backend, rejects_malformed_batches) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  const tiny_model m(6);
  cuda_backend gpu(m.cfg, m.w, small_opts());
  const int32_t a = *gpu.open_sequence();
  const std::vector<int32_t> one = {1}, two = {1, 2}, bad = {static_cast<int32_t>(m.cfg.n_vocab)};
  const batch_sequence sa{a, 1, 1}, s_closed{3, 1, 1}, s_many{a, 1, 2};
  const batch_sequence twice[] = {{a, 1, 1}, {a, 1, 1}};
  EXPECT_THROW(gpu.forward({one, {&s_closed, 1}, {}}), invalid_argument_error);
  EXPECT_THROW(gpu.forward({bad, {&sa, 1}, {}}), invalid_argument_error);
  EXPECT_THROW(gpu.forward({two, twice, {}}), invalid_argument_error);
  EXPECT_THROW(gpu.forward({one, {&s_many, 1}, {}}), invalid_argument_error);
  EXPECT_THROW(gpu.forward({two, {&sa, 1}, {}}), invalid_argument_error);  // token count mismatch
  EXPECT_THROW(gpu.forward({one, {&sa, 1}, {}, static_cast<row_outputs>(7)}), invalid_argument_error);
  EXPECT_EQ(gpu.sequence_length(a), 0);
  EXPECT_EQ(gpu.kv_blocks_free(), 64);
}

// Greedy callers ask for argmax ids only (row_outputs::argmax): the ids computed on the device
// equal argmax_index() over the logit rows that a backend asked for both downloads, for
// prefills, graph-bucketed decode steps, small verify steps (GEMV) and
// a large one (cuBLASLt), eager, captured and replayed; and the logits of a both-outputs step
// equal a logits-only step's bit for bit. Two LM-head rows are identical, so their logits tie
// exactly and the lower id must win.
TEST(cuda_backend, argmax_rows_equal_host_argmax_of_the_logits) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  tiny_model m(8);
  const int64_t V = m.cfg.n_vocab, E = m.cfg.n_embd;
  constexpr int32_t lo = 7, hi = 300;
  const uint16_t* out_bits = reinterpret_cast<const uint16_t*>(m.w.output.data);
  std::vector<uint16_t> head(out_bits, out_bits + V * E);
  for (int64_t j = 0; j < E; ++j) {
    head[lo * E + j] = fp32_to_bf16(6.f * bf16_to_fp32(head[lo * E + j]));  // often the largest
    head[hi * E + j] = head[lo * E + j];
  }
  m.w.output.data = reinterpret_cast<const uint8_t*>(head.data());  // uploaded at construction
  cuda_backend with_logits(m.cfg, m.w, small_opts()), ids_only(m.cfg, m.w, small_opts()),
      both(m.cfg, m.w, small_opts());
  cuda_backend* const backends[3] = {&with_logits, &ids_only, &both};
  const row_outputs asked[3] = {row_outputs::logits, row_outputs::argmax, row_outputs::logits_and_argmax};
  int32_t seq[3];
  for (int32_t i = 0; i < 3; ++i) {
    seq[i] = *with_logits.open_sequence();
    ASSERT_EQ(*ids_only.open_sequence(), seq[i]);
    ASSERT_EQ(*both.open_sequence(), seq[i]);
  }
  std::mt19937 rng(17);
  int64_t rows_seen = 0, ties_at_top = 0;
  auto step = [&](const std::vector<batch_sequence>& batch, const char* what) {
    std::vector<int32_t> tokens;
    for (const batch_sequence& q : batch)
      for (int32_t j = 0; j < q.n_tokens; ++j) tokens.push_back(static_cast<int32_t>(rng() % V));
    forward_output o[3];
    std::vector<float> logits[3];
    for (int i = 0; i < 3; ++i) {
      o[i] = backends[i]->forward({tokens, batch, {}, asked[i]});
      ASSERT_EQ(o[i].status, forward_status::ok) << what;
      ASSERT_EQ(o[i].n_rows, o[0].n_rows) << what;
      EXPECT_EQ(o[i].logits != nullptr, wants_logits(asked[i])) << what;
      EXPECT_EQ(o[i].argmax != nullptr, wants_argmax(asked[i])) << what;
      if (o[i].logits) logits[i] = rows_of(o[i], V);
    }
    EXPECT_EQ(logits[0], logits[2]) << what << ": asking for the ids too changed the logits";
    for (int64_t r = 0; r < o[0].n_rows; ++r) {
      const float* row = logits[2].data() + r * V;
      const int32_t want = argmax_index({row, static_cast<size_t>(V)});
      EXPECT_EQ(o[2].argmax[r], want) << what << " row " << r;
      EXPECT_EQ(o[1].argmax[r], want) << what << " row " << r;
      if (want == lo && row[lo] == row[hi]) ++ties_at_top;
      ++rows_seen;
    }
  };
  for (int32_t i = 0; i < 3; ++i) step({{seq[i], 8, 1}}, "prefill");
  for (int round = 0; round < 6; ++round) {
    // Decode: 3 sequences, their own graph bucket; the third round on replays graphs.
    step({{seq[0], 1, 1}, {seq[1], 1, 1}, {seq[2], 1, 1}}, "decode");
    // Verify steps: ragged, on the GEMV path (<= 8 tokens) ...
    step({{seq[0], 3, 3}, {seq[2], 4, 4}}, "verify");
    // ... and one through cuBLASLt, with a row count no decode bucket has.
    if (round % 3 == 2) step({{seq[0], 6, 6}, {seq[1], 7, 7}, {seq[2], 7, 5}}, "large verify");
  }
  EXPECT_GT(rows_seen, 80);
  EXPECT_GT(ties_at_top, 0) << "the tie case must actually be exercised";
}

}  // namespace
}  // namespace dspark::cuda::test

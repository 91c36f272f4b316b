// The whole GPU forward (engine/cuda/gpu_runner) on a tiny random Llama/Qwen3-style model:
//  1. ragged steps (prefill of several sequences at once, then a mixed step on top of their
//     caches) against a double-precision CPU forward that rounds to bf16 at the same points as
//     the GPU (GEMM inputs/outputs, q, K/V cache, attention output); tolerance: relative L2 error
//     of each logits row <= 1e-2 (float vs double accumulation, rare bf16 rounding flips);
//  2. speculative verification (6 tokens in one step) gives BIT-identical logits to decoding the
//     same 6 tokens one step at a time (hand-GEMV path, fixed attention split_len), whether the
//     verify step runs eager, is being captured, or is replayed from a CUDA graph, and the
//     decode steps replayed from a CUDA graph give the same bits as the eager ones.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "engine/cuda/gpu_runner.h"
#include "engine/cuda/gpu_weights.h"
#include "tests/cuda/cuda_test_util.h"

namespace dspark::cuda::test {
namespace {

gpu_model_config tiny_config() {
  gpu_model_config c;
  c.n_vocab = 384;
  c.n_embd = 256;
  c.n_layer = 2;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.head_dim = 64;
  c.n_ff = 320;
  c.n_rot = 64;
  c.pairing = rope_pairing::neox;
  c.rms_eps = 1e-6f;
  c.qk_norm = true;
  c.qkv_bias = true;
  c.inv_freq.resize(32);
  for (int i = 0; i < 32; ++i) c.inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / 64));
  return c;
}

double rb(double x) { return bf16_to_fp32(fp32_to_bf16(static_cast<float>(x))); }

std::vector<double> get_bf16(const bf16_t* p, size_t n) {
  std::vector<uint16_t> h(n);
  DSPARK_CUDA_CHECK(cudaMemcpy(h.data(), p, n * 2, cudaMemcpyDeviceToHost));
  return bf16_to_double(h);
}
std::vector<double> get_f32(const float* p, size_t n) {
  if (p == nullptr) return {};
  std::vector<float> h(n);
  DSPARK_CUDA_CHECK(cudaMemcpy(h.data(), p, n * 4, cudaMemcpyDeviceToHost));
  return std::vector<double>(h.begin(), h.end());
}

// The model's weights on the host, as doubles, for the reference forward.
struct host_model {
  gpu_model_config c;
  std::vector<double> embd, out, out_norm;
  struct layer { std::vector<double> qkv, o, gu, down, an, fn, qn, kn, bias; };
  std::vector<layer> layers;

  host_model(const gpu_model_config& cfg, const gpu_weights& w) : c(cfg) {
    const size_t d = c.n_embd;
    embd = get_bf16(w.tok_embd, c.n_vocab * d);
    out = get_bf16(w.output, c.n_vocab * d);
    out_norm = get_f32(w.output_norm, d);
    for (const gpu_layer& g : w.layers) {
      layers.push_back({get_bf16(g.wqkv, c.qkv_dim() * d), get_bf16(g.wo, d * c.q_dim()),
                        get_bf16(g.w_gate_up, 2 * c.n_ff * d), get_bf16(g.w_down, d * c.n_ff), get_f32(g.attn_norm, d),
                        get_f32(g.ffn_norm, d), get_f32(g.q_norm, c.head_dim), get_f32(g.k_norm, c.head_dim),
                        get_f32(g.qkv_bias, c.qkv_dim())});
    }
  }

  static std::vector<double> matvec(const std::vector<double>& w, const std::vector<double>& x, size_t n_out, bool round) {
    const size_t n_in = x.size();
    std::vector<double> y(n_out);
    for (size_t o = 0; o < n_out; ++o) {
      double s = 0;
      for (size_t i = 0; i < n_in; ++i) s += w[o * n_in + i] * x[i];
      y[o] = round ? rb(s) : s;
    }
    return y;
  }
  std::vector<double> norm(const std::vector<double>& x, const std::vector<double>& g) const {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / x.size() + c.rms_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = rb(x[i] * inv * g[i]);
    return y;
  }

  // Logits of every position of a sequence, recomputed from scratch.
  std::vector<std::vector<double>> forward(const std::vector<int32_t>& toks) const {
    const int n = static_cast<int>(toks.size()), d = c.n_embd, hd = c.head_dim, G = c.n_head / c.n_kv_head;
    std::vector<std::vector<double>> x(n);
    for (int t = 0; t < n; ++t) x[t].assign(embd.begin() + toks[t] * d, embd.begin() + (toks[t] + 1) * d);
    for (const layer& L : layers) {
      std::vector<std::vector<double>> q(n), k(n), v(n);
      for (int t = 0; t < n; ++t) {
        const auto qkv = matvec(L.qkv, norm(x[t], L.an), c.qkv_dim(), true);
        q[t].resize(c.q_dim());
        k[t].resize(c.kv_dim());
        v[t].resize(c.kv_dim());
        for (int h = 0; h < c.n_head + c.n_kv_head; ++h) {
          std::vector<double> a(hd);
          for (int i = 0; i < hd; ++i) a[i] = qkv[h * hd + i] + L.bias[h * hd + i];
          double ss = 0;
          for (double e : a) ss += e * e;
          const double inv = 1.0 / std::sqrt(ss / hd + c.rms_eps);
          for (int i = 0; i < hd; ++i) a[i] *= inv * (h < c.n_head ? L.qn[i] : L.kn[i]);
          std::vector<double> r = a;
          for (int i = 0; i < hd / 2; ++i) {
            const double ang = static_cast<double>(static_cast<float>(t) * c.inv_freq[i]);
            r[i] = a[i] * std::cos(ang) - a[i + hd / 2] * std::sin(ang);
            r[i + hd / 2] = a[i] * std::sin(ang) + a[i + hd / 2] * std::cos(ang);
          }
          for (int i = 0; i < hd; ++i) (h < c.n_head ? q[t][h * hd + i] : k[t][(h - c.n_head) * hd + i]) = rb(r[i]);
        }
        for (int i = 0; i < c.kv_dim(); ++i) v[t][i] = rb(qkv[c.q_dim() + c.kv_dim() + i] + L.bias[c.q_dim() + c.kv_dim() + i]);
      }
      for (int t = 0; t < n; ++t) {
        std::vector<double> o(c.q_dim());
        for (int h = 0; h < c.n_head; ++h) {
          const int g = h / G;
          std::vector<double> s(t + 1);
          double mx = -INFINITY, sum = 0;
          for (int j = 0; j <= t; ++j) {
            double dot = 0;
            for (int i = 0; i < hd; ++i) dot += q[t][h * hd + i] * k[j][g * hd + i];
            s[j] = dot / std::sqrt(static_cast<double>(hd));
            mx = std::max(mx, s[j]);
          }
          for (auto& e : s) sum += (e = std::exp(e - mx));
          for (int i = 0; i < hd; ++i) {
            double acc = 0;
            for (int j = 0; j <= t; ++j) acc += s[j] * v[j][g * hd + i];
            o[h * hd + i] = rb(acc / sum);
          }
        }
        const auto delta = matvec(L.o, o, d, true);
        for (int i = 0; i < d; ++i) x[t][i] += delta[i];
        const auto gu = matvec(L.gu, norm(x[t], L.fn), 2 * c.n_ff, true);
        std::vector<double> act(c.n_ff);
        for (int i = 0; i < c.n_ff; ++i) act[i] = rb(gu[i] / (1 + std::exp(-gu[i])) * gu[c.n_ff + i]);
        const auto delta2 = matvec(L.down, act, d, true);
        for (int i = 0; i < d; ++i) x[t][i] += delta2[i];
      }
    }
    std::vector<std::vector<double>> logits(n);
    for (int t = 0; t < n; ++t) logits[t] = matvec(out, norm(x[t], out_norm), c.n_vocab, false);
    return logits;
  }
};

// A runner plus simple host-side KV bookkeeping: sequence s owns blocks s*16 .. s*16+15.
struct fixture {
  gpu_model_config c = tiny_config();
  stream st;
  gpu_weights w = gpu_weights::random(c, 42, st.get());
  gpu_kv_pool kv{c, 16, 128};
  gpu_runner run;
  std::vector<int32_t> len = std::vector<int32_t>(8, 0);

  explicit fixture(int gemv_max) : run(c, w, kv, opts(gemv_max)) {}
  static gpu_runner_options opts(int gemv_max) {
    gpu_runner_options o;
    o.max_tokens = 64;
    o.max_seqs = 8;
    o.max_rows = 64;
    o.max_blocks_per_seq = 16;
    o.split_len = 32;  // several splits even at these short contexts
    o.gemv_max_tokens = gemv_max;
    return o;
  }

  struct part { int32_t seq; std::vector<int32_t> toks; };
  // Appends each part's tokens to its sequence; returns the logits of every new token (of the
  // first `rows` new tokens when rows > 0: the step's shape then has that many logit rows).
  std::vector<std::vector<float>> step(const std::vector<part>& parts, int rows = 0) {
    const auto& p = run.plan();
    int t = 0, max_kv = 0;
    p.cu_q_lens[0] = 0;
    for (size_t r = 0; r < parts.size(); ++r) {
      const int s = parts[r].seq;
      for (int b = 0; b < 16; ++b) p.block_tables[r * 16 + b] = s * 16 + b;
      for (int32_t tok : parts[r].toks) {
        const int pos = len[s]++;
        p.tokens[t] = tok;
        p.positions[t] = pos;
        p.slots[t] = (s * 16 + pos / 16) * 16 + pos % 16;
        p.logit_rows[t] = t;
        ++t;
      }
      p.cu_q_lens[r + 1] = t;
      p.kv_lens[r] = len[s];
      max_kv = std::max(max_kv, len[s]);
    }
    step_desc sd;
    sd.n_tokens = t;
    sd.n_seqs = static_cast<int32_t>(parts.size());
    if (rows > 0) t = std::min(t, rows);
    sd.n_rows = t;
    sd.max_kv_len = max_kv;
    run.run(sd, st.get());
    st.synchronize();
    std::vector<std::vector<float>> out(t);
    for (int i = 0; i < t; ++i)
      out[i].assign(run.host_logits() + static_cast<size_t>(i) * c.n_vocab, run.host_logits() + static_cast<size_t>(i + 1) * c.n_vocab);
    return out;
  }
};

std::vector<int32_t> random_tokens(std::mt19937& rng, int n, int vocab) {
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(cuda_gpu_runner, ragged_steps_match_double_reference) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  for (int gemv_max : {0, 8}) {  // cuBLASLt everywhere, then the GEMV for small steps
    fixture f(gemv_max);
    const host_model ref(f.c, f.w);
    std::mt19937 rng(5 + gemv_max);
    std::vector<std::vector<int32_t>> hist(3);
    auto check = [&](const std::vector<fixture::part>& parts, const std::vector<std::vector<float>>& got) {
      size_t row = 0;
      for (const auto& pt : parts) {
        hist[pt.seq].insert(hist[pt.seq].end(), pt.toks.begin(), pt.toks.end());
        const auto want = ref.forward(hist[pt.seq]);
        for (size_t i = 0; i < pt.toks.size(); ++i, ++row) {
          const auto& w = want[hist[pt.seq].size() - pt.toks.size() + i];
          EXPECT_LE(rel_l2(got[row], w), 1e-2) << "gemv_max " << gemv_max << " seq " << pt.seq << " new token " << i;
        }
      }
    };
    const std::vector<fixture::part> s1 = {{0, random_tokens(rng, 13, f.c.n_vocab)},
                                           {1, random_tokens(rng, 7, f.c.n_vocab)},
                                           {2, random_tokens(rng, 1, f.c.n_vocab)}};
    check(s1, f.step(s1));
    const std::vector<fixture::part> s2 = {{2, random_tokens(rng, 5, f.c.n_vocab)},
                                           {0, random_tokens(rng, 3, f.c.n_vocab)},
                                           {1, random_tokens(rng, 1, f.c.n_vocab)}};
    check(s2, f.step(s2));
    const std::vector<fixture::part> s3 = {{1, random_tokens(rng, 1, f.c.n_vocab)}};
    check(s3, f.step(s3));
  }
}

TEST(cuda_gpu_runner, verify_step_is_bitwise_equal_to_one_by_one_decode_and_graphs) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  fixture f(8);
  std::mt19937 rng(9);
  const auto prompt = random_tokens(rng, 7, f.c.n_vocab);
  const auto drafts = random_tokens(rng, 6, f.c.n_vocab);
  // Four sequences with the same prompt: the 7-token step runs eager, is captured, replayed.
  for (int32_t s = 0; s < 4; ++s) f.step({{s, prompt}});
  // The same 6-token verify on sequences 0..2: eager, captured, replayed.
  std::vector<std::vector<std::vector<float>>> verify;
  for (int32_t s = 0; s < 3; ++s) verify.push_back(f.step({{s, drafts}}));
  std::vector<std::vector<float>> decode;
  for (int32_t tok : drafts) decode.push_back(f.step({{3, {tok}}})[0]);  // eager, capture, replays
  EXPECT_EQ(f.run.graphs_captured(), 3);  // prompt, verify and decode shapes
  const graph_launch_stats g = f.run.graph_stats();
  EXPECT_EQ(g.eager, 3);     // each shape's first sighting
  EXPECT_EQ(g.captured, 3);  // its second
  EXPECT_EQ(g.replayed, 2 + 1 + 4);
  EXPECT_EQ(g.eager_cache_full, 0);
  for (size_t v = 0; v < verify.size(); ++v) {
    for (size_t i = 0; i < drafts.size(); ++i) {
      ASSERT_EQ(verify[v][i].size(), decode[i].size());
      EXPECT_EQ(0, std::memcmp(verify[v][i].data(), decode[i].data(), verify[v][i].size() * 4))
          << "verify run " << v << " (0 eager, 1 captured, 2 replayed), draft position " << i
          << ": verify logits differ from one-by-one decode";
    }
  }
}

// Shapes seen once (ragged verify steps make many) must not take the graph cache's slots, and a
// full cache must give a stale graph's slot to a shape in use. Shapes differ by token count and
// logit rows.
TEST(cuda_gpu_runner, one_off_shapes_leave_the_graph_cache_to_repeated_ones) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  fixture f(8);
  std::mt19937 rng(11);
  const auto toks = random_tokens(rng, 40, f.c.n_vocab);
  auto run_shape = [&](int n, int rows) {
    f.len[0] = 0;  // rewrite the same positions: only the shape matters here
    f.step({{0, std::vector<int32_t>(toks.begin(), toks.begin() + n)}}, rows);
  };
  int one_offs = 0;
  for (int n = 1; n <= 24; ++n)
    for (int rows = 1; rows <= n; ++rows, ++one_offs) run_shape(n, rows);
  ASSERT_GT(one_offs, 256);  // more one-off shapes than the cache has slots
  graph_launch_stats g = f.run.graph_stats();
  EXPECT_EQ(g.eager, one_offs);
  EXPECT_EQ(g.captured, 0);
  for (int i = 0; i < 3; ++i) run_shape(30, 1);  // a new shape: eager, captured, replayed
  g = f.run.graph_stats();
  EXPECT_EQ(g.captured, 1);
  EXPECT_EQ(g.replayed, 1);
  EXPECT_EQ(g.eager_cache_full, 0);

  // Fill the cache with shapes run twice in a row (one-offs seen again are captured at once,
  // unless a later one-off took their sighting slot).
  for (int n = 1; n <= 24 && f.run.graphs_captured() < 128; ++n)
    for (int rows = 1; rows <= std::min(n, 6) && f.run.graphs_captured() < 128; ++rows) {
      const int before = f.run.graphs_captured();
      run_shape(n, rows);
      if (f.run.graphs_captured() == before) run_shape(n, rows);
    }
  ASSERT_EQ(f.run.graphs_captured(), 128);
  for (int i = 0; i < 2; ++i) run_shape(31, 1);
  g = f.run.graph_stats();
  EXPECT_EQ(g.eager_cache_full, 1) << "every held graph is recent: the new shape's second sighting runs eagerly";
  // After 512 replays of one shape the others are stale: the new shape takes a slot.
  for (int i = 0; i < 512; ++i) run_shape(30, 1);
  run_shape(31, 1);
  const graph_launch_stats after = f.run.graph_stats();
  EXPECT_EQ(after.captured, g.captured + 1);
  EXPECT_EQ(after.graphs, 128);
  run_shape(31, 1);
  EXPECT_EQ(f.run.graph_stats().replayed, after.replayed + 1);
}

}  // namespace
}  // namespace dspark::cuda::test

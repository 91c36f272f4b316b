// Causal GQA attention against a naive double-precision implementation: single and multiple
// query tokens at several cache offsets, padded strides, 1-3 threads, large scores.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kernels/cpu/attention.h"
#include "tests/engine/test_kernels_util.h"

namespace dspark {
namespace {

struct attn_case {
  int64_t n_tokens, p0, n_heads, n_kv_heads, head_dim;
  float q_scale;  // multiplies q, to push scores far from 0
};

void check(const attn_case& c, int n_threads) {
  std::mt19937 rng(static_cast<unsigned>(c.n_tokens * 1000 + c.p0 * 10 + c.head_dim));
  const int64_t n_ctx = c.p0 + c.n_tokens;
  const int64_t q_stride = c.n_heads * c.head_dim + 3;        // padded rows
  const int64_t kv_stride = c.n_kv_heads * c.head_dim + 5;
  const int64_t out_stride = c.n_heads * c.head_dim + 1;
  auto q = test::random_floats(rng, c.n_tokens * q_stride, -c.q_scale, c.q_scale);
  auto k = test::random_floats(rng, n_ctx * kv_stride);
  auto v = test::random_floats(rng, n_ctx * kv_stride);
  std::vector<float> out(c.n_tokens * out_stride);
  test::poison(out);
  attention_args a;
  a.q = q.data();
  a.k = k.data();
  a.v = v.data();
  a.out = out.data();
  a.q_stride = q_stride;
  a.kv_stride = kv_stride;
  a.out_stride = out_stride;
  a.n_tokens = c.n_tokens;
  a.p0 = c.p0;
  a.n_heads = c.n_heads;
  a.n_kv_heads = c.n_kv_heads;
  a.head_dim = c.head_dim;
  thread_pool pool(n_threads);
  attention(a, pool);

  const double scale = 1.0 / std::sqrt(double(c.head_dim));
  for (int64_t t = 0; t < c.n_tokens; ++t) {
    for (int64_t h = 0; h < c.n_heads; ++h) {
      const int64_t g = h / (c.n_heads / c.n_kv_heads);
      const int64_t n = c.p0 + t + 1;  // causal: positions <= p0 + t
      std::vector<double> s(n);
      double m = -1e300;
      for (int64_t j = 0; j < n; ++j) {
        double d = 0;
        for (int64_t i = 0; i < c.head_dim; ++i)
          d += double(q[t * q_stride + h * c.head_dim + i]) * k[j * kv_stride + g * c.head_dim + i];
        s[j] = d * scale;
        m = std::max(m, s[j]);
      }
      double z = 0;
      for (auto& e : s) z += (e = std::exp(e - m));
      for (int64_t i = 0; i < c.head_dim; ++i) {
        double want = 0;
        for (int64_t j = 0; j < n; ++j) want += s[j] / z * v[j * kv_stride + g * c.head_dim + i];
        const float got = out[t * out_stride + h * c.head_dim + i];
        ASSERT_NEAR(got, want, 2e-5) << "t=" << t << " h=" << h << " i=" << i << " p0=" << c.p0
                                     << " threads=" << n_threads;
      }
    }
    // Padding between rows is never written.
    ASSERT_TRUE(std::isnan(out[t * out_stride + c.n_heads * c.head_dim]));
  }
}

TEST(KernelsAttention, MatchesNaiveDoubleGqa) {
  const attn_case cases[] = {
      {1, 0, 6, 2, 64, 1.0f},    {1, 37, 6, 2, 64, 1.0f},   {5, 0, 6, 3, 64, 1.0f},
      {7, 100, 9, 3, 64, 1.0f},  {3, 130, 4, 4, 20, 1.0f},  {2, 70, 8, 1, 128, 1.0f},
      {4, 200, 6, 2, 64, 30.0f},  // peaked softmax: scores up to ~100s
  };
  for (const auto& c : cases)
    for (int nt : {1, 2, 3}) check(c, nt);
}

TEST(KernelsAttention, RejectsBadShapes) {
  thread_pool pool(1);
  attention_args a;
  a.n_tokens = 1;
  a.n_heads = 6;
  a.n_kv_heads = 4;
  a.head_dim = 64;
  EXPECT_THROW(attention(a, pool), std::exception);
}

}  // namespace
}  // namespace dspark

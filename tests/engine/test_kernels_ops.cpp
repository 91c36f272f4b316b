// ops.h against plain double-precision formulas: rms_norm, add, silu_mul, rope (both pairing
// styles, checked as complex rotations), rope_inv_freqs (+ llama3 scaling), softmax, argmax.
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <limits>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/engine/test_kernels_util.h"

namespace dspark {
namespace {

using test::poison;
using test::random_floats;

TEST(KernelsOps, RmsNormMatchesFormula) {
  std::mt19937 rng(1);
  for (int64_t n : {1, 7, 64, 576, 1000}) {
    auto x = random_floats(rng, n, -3.0f, 3.0f);
    auto w = random_floats(rng, n, 0.5f, 1.5f);
    double ss = 0;
    for (float v : x) ss += double(v) * v;
    const double inv = 1.0 / std::sqrt(ss / n + 1e-5);
    std::vector<float> out(n);
    poison(out);
    rms_norm(x.data(), w.data(), 1e-5f, n, out.data());
    for (int64_t i = 0; i < n; ++i) EXPECT_NEAR(out[i], x[i] * inv * w[i], 1e-6 * (1 + std::fabs(x[i] * inv * w[i])));
    std::vector<float> y = x;
    rms_norm_inplace(y.data(), w.data(), 1e-5f, n);
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(y[i], out[i]);
  }
}

TEST(KernelsOps, AddAndSiluMul) {
  std::mt19937 rng(2);
  const int64_t n = 1539;
  auto a = random_floats(rng, n, -8, 8), b = random_floats(rng, n, -2, 2);
  std::vector<float> s = a;
  add_inplace(s.data(), b.data(), n);
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(s[i], a[i] + b[i]);
  std::vector<float> out(n);
  poison(out);
  silu_mul(a.data(), b.data(), out.data(), n);
  for (int64_t i = 0; i < n; ++i) {
    const double g = a[i];
    const double want = g / (1.0 + std::exp(-g)) * b[i];
    EXPECT_NEAR(out[i], want, 1e-6 * (1 + std::fabs(want)));
  }
  silu_mul(a.data(), b.data(), a.data(), n);  // aliasing gate and out
  for (int64_t i = 0; i < n; ++i) EXPECT_EQ(a[i], out[i]);
}

TEST(KernelsOps, RopeInvFreqs) {
  const auto f = rope_inv_freqs(64, 10000.0f);
  ASSERT_EQ(f.size(), 32u);
  for (int i = 0; i < 32; ++i) EXPECT_NEAR(f[i], std::pow(10000.0, -2.0 * i / 64), 1e-6 * f[i]);
  EXPECT_THROW(rope_inv_freqs(63, 10000.0f), std::exception);
}

// Llama 3.1 (factor 8, low 1, high 4, 8192 positions, theta 5e5, head_dim 128) has pairs in
// all three bands; compare with the rule written independently in double.
TEST(KernelsOps, RopeLlama3Scaling) {
  rope_llama3_scaling s;
  s.factor = 8;
  s.low_freq_factor = 1;
  s.high_freq_factor = 4;
  s.original_max_positions = 8192;
  const auto f = rope_inv_freqs(128, 500000.0f, s);
  int kept = 0, slowed = 0, blended = 0;
  for (int i = 0; i < 64; ++i) {
    const double base = std::pow(500000.0, -2.0 * i / 128);
    const double wl = 2 * M_PI / base;
    double want;
    if (wl < 8192.0 / 4) {
      want = base, ++kept;
    } else if (wl > 8192.0 / 1) {
      want = base / 8, ++slowed;
    } else {
      const double sm = (8192.0 / wl - 1) / (4 - 1);
      want = (1 - sm) * base / 8 + sm * base, ++blended;
    }
    EXPECT_NEAR(f[i], want, 1e-5 * want) << "pair " << i;
  }
  EXPECT_GT(kept, 0);
  EXPECT_GT(slowed, 0);
  EXPECT_GT(blended, 0);
}

// Rotary embedding as complex multiplication: pair (a, b) is a + ib, turned by e^{i angle}
// with angle = float32(pos * inv_freq) (the documented float32 rounding of the angle).
TEST(KernelsOps, RopeBothStylesAreComplexRotations) {
  std::mt19937 rng(3);
  const int64_t n_heads = 3;
  for (int64_t head_dim : {8, 64, 128}) {
    const auto inv = rope_inv_freqs(head_dim, 10000.0f);
    for (int64_t pos : {0, 1, 17, 4095}) {
      for (rope_style style : {rope_style::normal, rope_style::neox}) {
        const auto x = random_floats(rng, n_heads * head_dim);
        std::vector<float> y = x;
        rope_apply(y.data(), n_heads, head_dim, pos, inv.data(), style);
        const int64_t half = head_dim / 2;
        for (int64_t h = 0; h < n_heads; ++h) {
          for (int64_t i = 0; i < half; ++i) {
            const int64_t ia = style == rope_style::normal ? 2 * i : i;
            const int64_t ib = style == rope_style::normal ? 2 * i + 1 : i + half;
            const double angle = static_cast<float>(pos) * inv[i];
            const std::complex<double> z(x[h * head_dim + ia], x[h * head_dim + ib]);
            const std::complex<double> r = z * std::polar(1.0, angle);
            EXPECT_NEAR(y[h * head_dim + ia], r.real(), 2e-6) << "pos " << pos << " pair " << i;
            EXPECT_NEAR(y[h * head_dim + ib], r.imag(), 2e-6) << "pos " << pos << " pair " << i;
          }
        }
      }
    }
  }
}

TEST(KernelsOps, SoftmaxStableAndNormalised) {
  std::vector<float> x = {1000.0f, 999.0f, -5.0f, 1000.0f};
  softmax_inplace(x.data(), 4);
  const double e1 = std::exp(-1.0), z = 2 + e1 + std::exp(-1005.0);
  EXPECT_NEAR(x[0], 1 / z, 1e-7);
  EXPECT_NEAR(x[1], e1 / z, 1e-7);
  EXPECT_NEAR(x[3], 1 / z, 1e-7);
  EXPECT_GE(x[2], 0.0f);
  std::mt19937 rng(4);
  auto v = random_floats(rng, 300, -20, 20);
  auto w = v;
  softmax_inplace(w.data(), 300);
  double m = -1e300, sum = 0;
  for (float f : v) m = std::max(m, double(f));
  for (float f : v) sum += std::exp(f - m);
  for (int i = 0; i < 300; ++i) EXPECT_NEAR(w[i], std::exp(v[i] - m) / sum, 1e-7 + 1e-6 * w[i]);
}

TEST(KernelsOps, Argmax) {
  std::vector<float> x = {1, 3, 2, 3, -1};
  EXPECT_EQ(argmax(x.data(), 5), 1);  // first of ties
  x[0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(argmax(x.data(), 5), 1);
  x[4] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(argmax(x.data(), 5), 4);
  std::vector<float> one = {-7};
  EXPECT_EQ(argmax(one.data(), 1), 0);
  std::mt19937 rng(5);
  auto big = random_floats(rng, 49152);
  big[31337] = 2.0f;
  EXPECT_EQ(argmax(big.data(), 49152), 31337);
}

}  // namespace
}  // namespace dspark

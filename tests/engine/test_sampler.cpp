// Sampler: filtered distributions against hand-computed answers, greedy and ties, seeded
// reproducibility, empirical frequencies, parameter validation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "common/error.h"
#include "engine/sampler.h"

namespace dspark {
namespace {

constexpr float k_inf = std::numeric_limits<float>::infinity();

std::vector<float> dist(const std::vector<float>& logits, sampling_params p) {
  sampler s(static_cast<int64_t>(logits.size()), p);
  std::vector<float> out(logits.size());
  s.distribution(logits.data(), out.data());
  return out;
}

void expect_probs(const std::vector<float>& got, const std::vector<double>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 2e-6) << "id " << i;
}

sampling_params temp(float t) {
  sampling_params p;
  p.temperature = t;
  return p;
}

// The worked example of sampler.h, computed by hand: e^2, e^1, e^0 = 7.389056, 2.718282, 1.
const std::vector<float> k_logits = {2.0f, 1.0f, 0.0f, -k_inf};

TEST(Sampler, TemperatureOneIsSoftmax) {
  expect_probs(dist(k_logits, temp(1)), {0.665241, 0.244728, 0.090031, 0});
}

TEST(Sampler, TemperatureScalesLogits) {
  // logits / 2 = [1, .5, 0]: e = 2.718282, 1.648721, 1; sum 5.367003.
  expect_probs(dist(k_logits, temp(2)), {0.506480, 0.307196, 0.186324, 0});
}

TEST(Sampler, TopK) {
  auto p = temp(1);
  p.top_k = 2;
  expect_probs(dist(k_logits, p), {0.731059, 0.268941, 0, 0});
  p.top_k = 1;
  expect_probs(dist(k_logits, p), {1, 0, 0, 0});
  p.top_k = 10;  // larger than the vocabulary: off
  expect_probs(dist(k_logits, p), {0.665241, 0.244728, 0.090031, 0});
}

TEST(Sampler, TopKTiesKeepLowerIds) {
  auto p = temp(1);
  p.top_k = 2;
  expect_probs(dist({1, 1, 1, 0}, p), {0.5, 0.5, 0, 0});
}

TEST(Sampler, TopP) {
  auto p = temp(1);
  p.top_p = 0.6f;  // .665 alone reaches .6
  expect_probs(dist(k_logits, p), {1, 0, 0, 0});
  p.top_p = 0.7f;  // .665 < .7, .665 + .245 >= .7
  expect_probs(dist(k_logits, p), {0.731059, 0.268941, 0, 0});
  p.top_p = 0.95f;
  expect_probs(dist(k_logits, p), {0.665241, 0.244728, 0.090031, 0});
}

TEST(Sampler, MinP) {
  auto p = temp(1);
  p.min_p = 0.2f;  // threshold .133: drops .090
  expect_probs(dist(k_logits, p), {0.731059, 0.268941, 0, 0});
  p.min_p = 0.1f;  // threshold .0665: keeps all three
  expect_probs(dist(k_logits, p), {0.665241, 0.244728, 0.090031, 0});
}

TEST(Sampler, FiltersCompose) {
  // T = 2 -> [.506, .307, .186]; top_k 3 keeps all; top_p .8 keeps two (.814 >= .8).
  auto p = temp(2);
  p.top_k = 3;
  p.top_p = 0.8f;
  expect_probs(dist(k_logits, p), {0.622459, 0.377541, 0, 0});
}

// top_p over a long tail: the nucleus is larger than the first sorted prefix (64 tokens),
// checked against a plain full sort in double precision.
TEST(Sampler, TopPWithLargeNucleusMatchesFullSort) {
  const int n = 1000;
  std::vector<float> logits(n);
  for (int i = 0; i < n; ++i) logits[i] = -0.004f * static_cast<float>((i * 7919) % n);
  auto p = temp(1);
  p.top_p = 0.9f;
  const auto got = dist(logits, p);

  std::vector<double> e(n);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += (e[i] = std::exp(static_cast<double>(logits[i])));
  std::vector<int> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return e[a] != e[b] ? e[a] > e[b] : a < b; });
  double cum = 0, kept = 0;
  std::vector<double> want(n, 0.0);
  for (int i : order) {
    if (cum >= 0.9 * sum) break;
    cum += e[i];
    want[i] = e[i];
  }
  for (double v : want) kept += v;
  int n_kept = 0;
  for (int i = 0; i < n; ++i) {
    EXPECT_NEAR(got[i], want[i] / kept, 1e-6) << "id " << i;
    n_kept += want[i] > 0;
  }
  EXPECT_GT(n_kept, 64);
}

TEST(Sampler, GreedyIsOneHotAtTheFirstMaximum) {
  expect_probs(dist({0.5f, 3.0f, 3.0f, -1.0f}, temp(0)), {0, 1, 0, 0});
  sampler s(4, temp(0));
  const std::vector<float> l = {0.5f, 3.0f, 3.0f, -1.0f};
  for (uint64_t c = 0; c < 5; ++c) EXPECT_EQ(s.sample(l.data(), c), 1);
}

TEST(Sampler, SameSeedSameDraws) {
  std::vector<float> logits(50);
  for (int i = 0; i < 50; ++i) logits[i] = std::sin(static_cast<float>(i));
  auto p = temp(1);
  p.seed = 42;
  sampler a(50, p), b(50, p);
  p.seed = 43;
  sampler c(50, p);
  int differ = 0;
  for (uint64_t step = 0; step < 64; ++step) {
    const int32_t x = a.sample(logits.data(), step);
    EXPECT_EQ(x, b.sample(logits.data(), step));
    differ += x != c.sample(logits.data(), step);
  }
  EXPECT_GT(differ, 0) << "a different seed should give different draws";
}

TEST(Sampler, DrawFrequenciesFollowTheDistribution) {
  const std::vector<float> probs = {0.5f, 0.0f, 0.3f, 0.2f};
  std::vector<int> count(4, 0);
  const int n = 20000;
  for (int i = 0; i < n; ++i) ++count[sample_from(probs.data(), 4, uniform01(7, i))];
  EXPECT_EQ(count[1], 0);
  EXPECT_NEAR(count[0] / double(n), 0.5, 0.02);
  EXPECT_NEAR(count[2] / double(n), 0.3, 0.02);
  EXPECT_NEAR(count[3] / double(n), 0.2, 0.02);
}

TEST(Sampler, SampleFromEdges) {
  const std::vector<float> probs = {0.0f, 0.25f, 0.75f, 0.0f};
  EXPECT_EQ(sample_from(probs.data(), 4, 0.0), 1);
  EXPECT_EQ(sample_from(probs.data(), 4, 0.2499), 1);
  EXPECT_EQ(sample_from(probs.data(), 4, 0.25), 2);
  EXPECT_EQ(sample_from(probs.data(), 4, 0.9999999), 2);  // never the zero-probability tail
}

TEST(Sampler, Uniform01IsInRangeAndDeterministic) {
  for (uint64_t i = 0; i < 1000; ++i) {
    const double u = uniform01(123, i);
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
    EXPECT_EQ(u, uniform01(123, i));
  }
  EXPECT_NE(uniform01(1, 0), uniform01(2, 0));
}

TEST(Sampler, InvalidParamsAreRejectedWithTheRange) {
  auto expect_bad = [](sampling_params p, const std::string& fragment) {
    try {
      validate(p);
      ADD_FAILURE() << "accepted: " << fragment;
    } catch (const invalid_argument_error& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  sampling_params p;
  p.temperature = -0.5f;
  expect_bad(p, "[0, 100]");
  p.temperature = std::nanf("");
  expect_bad(p, "temperature");
  p = {};
  p.top_k = -1;
  expect_bad(p, "top_k must be >= 0");
  p = {};
  p.top_p = 0.0f;
  expect_bad(p, "(0, 1]");
  p.top_p = 1.5f;
  expect_bad(p, "(0, 1]");
  p = {};
  p.min_p = 1.5f;
  expect_bad(p, "min_p must be in [0, 1]");
  p = {};
  p.max_tokens = 0;
  expect_bad(p, "max_tokens");
  p = {};
  p.stop = {"ok", ""};
  expect_bad(p, "stop strings");
  EXPECT_THROW(sampler(10, p), invalid_argument_error);
  EXPECT_NO_THROW(validate(sampling_params{}));
}

}  // namespace
}  // namespace dspark

// Sampling parameters, filtered distributions and counter-based draws.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "common/error.h"
#include "kernels/cpu/ops.h"

namespace dspark {

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

std::string num(double v) {
  std::string s = std::to_string(v);
  return s;
}

}  // namespace

void validate(const sampling_params& p) {
  if (!(p.temperature >= 0.0f && p.temperature <= 100.0f))
    throw invalid_argument_error("temperature must be in [0, 100] (0 = greedy), got " +
                                 num(p.temperature));
  if (p.top_k < 0)
    throw invalid_argument_error("top_k must be >= 0 (0 = off), got " + std::to_string(p.top_k));
  if (!(p.top_p > 0.0f && p.top_p <= 1.0f))
    throw invalid_argument_error("top_p must be in (0, 1] (1 = off), got " + num(p.top_p));
  if (!(p.min_p >= 0.0f && p.min_p <= 1.0f))
    throw invalid_argument_error("min_p must be in [0, 1] (0 = off), got " + num(p.min_p));
  if (p.max_tokens < 1)
    throw invalid_argument_error("max_tokens must be >= 1, got " + std::to_string(p.max_tokens));
  for (const auto& s : p.stop)
    if (s.empty()) throw invalid_argument_error("stop strings must not be empty");
}

double uniform01(uint64_t seed, uint64_t counter) {
  const uint64_t bits = splitmix64(splitmix64(seed) ^ splitmix64(counter + 0x632be59bd9b4e019ull));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

int32_t sample_from(const float* probs, int64_t n, double u) {
  double cum = 0;
  int64_t last = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (probs[i] <= 0) continue;
    cum += probs[i];
    last = i;
    if (u < cum) return static_cast<int32_t>(i);
  }
  // u beyond the rounded total: the last token with mass (never one with zero probability).
  return static_cast<int32_t>(last < 0 ? 0 : last);
}

sampler::sampler(int64_t n_vocab, const sampling_params& p) : n_vocab_(n_vocab), p_(p) {
  validate(p);
  if (n_vocab <= 0)
    throw invalid_argument_error("sampler: n_vocab must be > 0, got " + std::to_string(n_vocab));
  probs_.resize(static_cast<size_t>(n_vocab));
  order_.resize(static_cast<size_t>(n_vocab));
}

void sampler::distribution(const float* logits, float* probs) {
  const int64_t n = n_vocab_;
  if (greedy()) {
    std::fill(probs, probs + n, 0.0f);
    probs[argmax(logits, n)] = 1.0f;
    return;
  }
  // 1. temperature + softmax (max subtracted; -inf logits get probability 0).
  const float mx = logits[argmax(logits, n)];
  const double inv_t = 1.0 / p_.temperature;
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = std::exp((static_cast<double>(logits[i]) - mx) * inv_t);
    probs[i] = static_cast<float>(e);
    sum += e;
  }
  for (int64_t i = 0; i < n; ++i) probs[i] = static_cast<float>(probs[i] / sum);

  // 2-3. top_k and top_p need the most probable tokens in order (ties: lower id first).
  const bool use_k = p_.top_k > 0 && p_.top_k < n;
  const bool use_p = p_.top_p < 1.0f;
  if (use_k || use_p) {
    auto more_probable = [probs](int32_t a, int32_t b) {
      return probs[a] != probs[b] ? probs[a] > probs[b] : a < b;
    };
    std::iota(order_.begin(), order_.end(), 0);
    int64_t keep = use_k ? p_.top_k : n;
    if (use_k) std::nth_element(order_.begin(), order_.begin() + keep - 1, order_.end(), more_probable);
    if (use_p) {
      double kept_mass = 0;
      for (int64_t i = 0; i < keep; ++i) kept_mass += probs[order_[i]];
      const double target = p_.top_p * kept_mass;
      // Sort a growing prefix until it holds the nucleus: usually a few dozen tokens.
      for (int64_t m = std::min<int64_t>(keep, 64);; m = std::min(keep, m * 4)) {
        std::partial_sort(order_.begin(), order_.begin() + m, order_.begin() + keep, more_probable);
        double cum = 0;
        int64_t c = 0;
        while (c < m && cum < target) cum += probs[order_[c++]];
        if (cum >= target || m == keep) {
          keep = c;
          break;
        }
      }
    }
    for (int64_t i = keep; i < n; ++i) probs[order_[i]] = 0.0f;
  }

  // 4. min_p, relative to the most probable token (unchanged by the filters above).
  if (p_.min_p > 0.0f) {
    const float threshold = p_.min_p * probs[argmax(probs, n)];
    for (int64_t i = 0; i < n; ++i)
      if (probs[i] < threshold) probs[i] = 0.0f;
  }
  double total = 0;
  for (int64_t i = 0; i < n; ++i) total += probs[i];
  for (int64_t i = 0; i < n; ++i) probs[i] = static_cast<float>(probs[i] / total);
}

int32_t sampler::sample(const float* logits, uint64_t counter) {
  if (greedy()) return static_cast<int32_t>(argmax(logits, n_vocab_));
  distribution(logits, probs_.data());
  return sample_from(probs_.data(), n_vocab_, uniform01(p_.seed, counter));
}

}  // namespace dspark

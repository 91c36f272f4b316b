// Statistics helpers for the speculative-decoding tests: the chi-square goodness-of-fit test
// with its exact p-value (regularised upper incomplete gamma function).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace dspark::test {

// Q(a, x) = Gamma(a, x) / Gamma(a), the regularised upper incomplete gamma function: by the
// power series of P(a, x) for x < a + 1, by the continued fraction of Q otherwise (both
// converge fast in their region).
inline double gamma_q(double a, double x) {
  if (x <= 0.0) return 1.0;
  const double log_prefix = a * std::log(x) - x - std::lgamma(a);
  if (x < a + 1.0) {
    double term = 1.0 / a, sum = term;
    for (int n = 1; n < 10000; ++n) {
      term *= x / (a + n);
      sum += term;
      if (std::fabs(term) < std::fabs(sum) * 1e-16) break;
    }
    return 1.0 - sum * std::exp(log_prefix);
  }
  // Modified Lentz evaluation of the continued fraction for Gamma(a, x).
  const double tiny = 1e-300;
  double b = x + 1.0 - a, c = 1.0 / tiny, d = 1.0 / b, h = d;
  for (int i = 1; i < 10000; ++i) {
    const double an = -i * (i - a);
    b += 2.0;
    d = an * d + b;
    if (std::fabs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    const double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1.0) < 1e-16) break;
  }
  return std::exp(log_prefix) * h;
}

// Survival function of the chi-square distribution with `dof` degrees of freedom.
inline double chi_square_sf(double stat, double dof) { return gamma_q(dof / 2.0, stat / 2.0); }

struct chi_square_result {
  double stat = 0.0;
  int dof = 0;
  double p_value = 1.0;
};

// Goodness of fit of `counts` (n samples) to probabilities `expected_p`. Cells whose expected
// count is below 5 are pooled into one cell (dropped if the pool stays below 5), the usual
// validity rule for the chi-square approximation.
inline chi_square_result chi_square_test(const std::vector<int64_t>& counts, const std::vector<double>& expected_p) {
  double n = 0.0;
  for (int64_t c : counts) n += static_cast<double>(c);
  chi_square_result r;
  double pool_obs = 0.0, pool_exp = 0.0;
  int cells = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const double e = expected_p[i] * n;
    if (e < 5.0) {
      pool_obs += static_cast<double>(counts[i]);
      pool_exp += e;
      continue;
    }
    r.stat += (counts[i] - e) * (counts[i] - e) / e;
    ++cells;
  }
  if (pool_exp >= 5.0) {
    r.stat += (pool_obs - pool_exp) * (pool_obs - pool_exp) / pool_exp;
    ++cells;
  } else if (pool_obs > 3.0 * pool_exp + 10.0) {
    r.stat += 1e9;  // mass where the target has (almost) none: a certain misfit
  }
  r.dof = cells - 1;
  r.p_value = r.dof > 0 ? chi_square_sf(r.stat, r.dof) : 1.0;
  return r;
}

}  // namespace dspark::test

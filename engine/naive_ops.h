// TEMPORARY plain versions of the row ops the CPU backend needs, until kernels/cpu/ops.h and
// kernels/cpu/attention.h land; then this file is deleted.
#pragma once

#include <cmath>
#include <cstdint>

namespace dspark::naive {

// y = x / rms(x) * w over n elements.
inline void rms_norm(const float* x, const float* w, float* y, int64_t n, float eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float scale = static_cast<float>(1.0 / std::sqrt(ss / n + eps));
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale * w[i];
}

// gate[i] = silu(gate[i]) * up[i].
inline void silu_mul(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) gate[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
}

// Rotates one head's first n_rot dims by cos/sin[n_rot/2]; interleaved pairs (2i, 2i+1),
// else neox pairs (i, i + n_rot/2).
inline void rope_head(float* x, const float* cs, const float* sn, int64_t n_rot, bool interleaved) {
  const int64_t half = n_rot / 2;
  for (int64_t i = 0; i < half; ++i) {
    const int64_t a = interleaved ? 2 * i : i;
    const int64_t b = interleaved ? 2 * i + 1 : i + half;
    const float x0 = x[a], x1 = x[b];
    x[a] = x0 * cs[i] - x1 * sn[i];
    x[b] = x0 * sn[i] + x1 * cs[i];
  }
}

}  // namespace dspark::naive

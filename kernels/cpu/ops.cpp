// Per-token ops: rms_norm, residual add, SwiGLU gate, rotary embedding, softmax, argmax.
#include "kernels/cpu/ops.h"

#include <cmath>
#include <string>

#include "common/error.h"

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace dspark {

void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* out) {
  // Sum of squares in double: n is small and this makes the result independent of the
  // summation order (so it matches a reference to float rounding).
  double ss = 0.0;
  int64_t i = 0;
#ifdef __AVX2__
  __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
    acc0 = _mm256_fmadd_pd(lo, lo, acc0);
    acc1 = _mm256_fmadd_pd(hi, hi, acc1);
  }
  alignas(32) double parts[4];
  _mm256_store_pd(parts, _mm256_add_pd(acc0, acc1));
  ss = parts[0] + parts[1] + parts[2] + parts[3];
#endif
  for (; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(n) + eps));
  i = 0;
#ifdef __AVX2__
  const __m256 vinv = _mm256_set1_ps(inv);
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), vinv),
                                            _mm256_loadu_ps(weight + i)));
  }
#endif
  for (; i < n; ++i) out[i] = x[i] * inv * weight[i];
}

void rms_norm_inplace(float* x, const float* weight, float eps, int64_t n) {
  rms_norm(x, weight, eps, n, x);
}

void add_inplace(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
#ifdef __AVX2__
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_add_ps(_mm256_loadu_ps(dst + i), _mm256_loadu_ps(src + i)));
  }
#endif
  for (; i < n; ++i) dst[i] += src[i];
}

void silu_mul(const float* gate, const float* up, float* out, int64_t n) {
  // std::exp per element: a few thousand per token, negligible next to the matmuls, and
  // exact to float rounding (a polynomial exp would cost accuracy for no visible speed).
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

std::vector<float> rope_inv_freqs(int64_t head_dim, float theta,
                                  const std::optional<rope_llama3_scaling>& scaling) {
  if (head_dim <= 0 || head_dim % 2 != 0) {
    throw invalid_argument_error("rope_inv_freqs: head_dim must be even and positive, got " +
                                 std::to_string(head_dim));
  }
  std::vector<float> f(static_cast<size_t>(head_dim / 2));
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    // HF: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all float32.
    const float e = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float p = static_cast<float>(std::pow(static_cast<double>(theta), static_cast<double>(e)));
    f[static_cast<size_t>(i)] = 1.0f / p;
  }
  if (scaling) {
    // HF _compute_llama3_parameters: long wavelengths are slowed by `factor`, short ones kept,
    // and the band in between is interpolated linearly in 1 / wavelength.
    const float old_len = static_cast<float>(scaling->original_max_positions);
    const float low_wavelen = old_len / scaling->low_freq_factor;
    const float high_wavelen = old_len / scaling->high_freq_factor;
    for (float& v : f) {
      const float wavelen = 2.0f * static_cast<float>(M_PI) / v;
      if (wavelen > low_wavelen) {
        v = v / scaling->factor;
      } else if (!(wavelen < high_wavelen)) {
        const float smooth = (old_len / wavelen - scaling->low_freq_factor) /
                             (scaling->high_freq_factor - scaling->low_freq_factor);
        v = (1.0f - smooth) * v / scaling->factor + smooth * v;
      }
    }
  }
  return f;
}

void rope_apply(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, const float* inv_freqs,
                rope_style style) {
  const int64_t half = head_dim / 2;
  // cos/sin per pair, shared by all heads (head_dim <= 512 in practice; larger falls back to
  // computing per head).
  constexpr int64_t kMaxHalf = 256;
  float cs[kMaxHalf], sn[kMaxHalf];
  const bool cached = half <= kMaxHalf;
  auto angle_of = [&](int64_t i) {
    const float a = static_cast<float>(pos) * inv_freqs[i];  // float32, as HF
    return static_cast<double>(a);
  };
  if (cached) {
    for (int64_t i = 0; i < half; ++i) {
      const double a = angle_of(i);
      cs[i] = static_cast<float>(std::cos(a));
      sn[i] = static_cast<float>(std::sin(a));
    }
  }
  for (int64_t h = 0; h < n_heads; ++h) {
    float* r = x + h * head_dim;
    for (int64_t i = 0; i < half; ++i) {
      const float c = cached ? cs[i] : static_cast<float>(std::cos(angle_of(i)));
      const float s = cached ? sn[i] : static_cast<float>(std::sin(angle_of(i)));
      float* a = style == rope_style::normal ? r + 2 * i : r + i;
      float* b = style == rope_style::normal ? r + 2 * i + 1 : r + i + half;
      const float x0 = *a, x1 = *b;
      *a = x0 * c - x1 * s;
      *b = x0 * s + x1 * c;
    }
  }
}

void softmax_inplace(float* x, int64_t n) {
  float m = x[0];
  for (int64_t i = 1; i < n; ++i) m = x[i] > m ? x[i] : m;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - m);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

int64_t argmax(const float* x, int64_t n) {
  int64_t best = 0;
  while (best < n && std::isnan(x[best])) ++best;
  if (best == n) return 0;
  for (int64_t i = best + 1; i < n; ++i) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

}  // namespace dspark

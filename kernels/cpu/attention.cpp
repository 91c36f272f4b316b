// Causal GQA attention with a blockwise running-max softmax (one pass over K and V).
//
// For one (token, head): positions are visited in blocks of kBlock. Each block's scores
// s_j = scale * q.k_j go to a stack buffer; with m the running maximum, the accumulator
// acc = sum_j exp(s_j - m) v_j and the normaliser l = sum_j exp(s_j - m) are rescaled by
// exp(m_old - m_new) whenever a block raises the maximum. out = acc / l at the end.
#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "common/error.h"
#include "kernels/cpu/matmul_internal.h"  // hsum8: the one horizontal-sum order

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace dspark {
namespace {

constexpr int64_t kBlock = 64;
constexpr int64_t kMaxHeadDim = 512;

inline float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
#ifdef __AVX2__
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  s = cpu::hsum8(_mm256_add_ps(acc0, acc1));
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// acc[i] = acc[i] * c + w * v[i]
inline void scale_add(float* acc, float c, float w, const float* v, int64_t n) {
  int64_t i = 0;
#ifdef __AVX2__
  const __m256 vc = _mm256_set1_ps(c), vw = _mm256_set1_ps(w);
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(acc + i, _mm256_fmadd_ps(vw, _mm256_loadu_ps(v + i),
                                              _mm256_mul_ps(vc, _mm256_loadu_ps(acc + i))));
  }
#endif
  for (; i < n; ++i) acc[i] = acc[i] * c + w * v[i];
}

// The blockwise running-max softmax over positions 0..n_ctx-1 (the file header), shared by both
// forms of attend_one: score(j) gives s_j, rescale(c) multiplies the accumulator by c, and
// add(w, j) adds w * v_j to it. Returns the normaliser l.
template <class Score, class Rescale, class Add>
inline float online_softmax(int64_t n_ctx, Score score, Rescale rescale, Add add) {
  float scores[kBlock];
  float m = -INFINITY, l = 0.0f;
  for (int64_t j0 = 0; j0 < n_ctx; j0 += kBlock) {
    const int64_t nj = std::min(kBlock, n_ctx - j0);
    float bmax = -INFINITY;
    for (int64_t j = 0; j < nj; ++j) {
      scores[j] = score(j0 + j);
      bmax = std::max(bmax, scores[j]);
    }
    if (bmax > m) {
      const float c = std::exp(m - bmax);  // 0 on the first block (m = -inf)
      l *= c;
      rescale(c);
      m = bmax;
    }
    for (int64_t j = 0; j < nj; ++j) {
      const float w = std::exp(scores[j] - m);
      l += w;
      add(w, j0 + j);
    }
  }
  return l;
}

#ifdef __AVX2__
// attend_one for head_dim = 8 * NV (64 and 128, the common sizes) with q and the accumulator in
// registers: the generic form reloads and stores the whole accumulator for every position
// (scale_add) and reloads q for every dot. Bit for bit the generic form's arithmetic: the same
// two-chain dot and reduction, acc * c for a rescale, and fma(w, v, acc) for
// scale_add(acc, 1, w, v) (acc * 1 is exact).
template <int NV>
void attend_one_fixed(const attention_args& a, int64_t t, int64_t h, int64_t q_stride,
                      int64_t kv_stride, int64_t out_stride, float scale) {
  static_assert(NV % 2 == 0, "the dot's two chains take 16 floats a step");
  constexpr int64_t d = 8 * NV;
  const int64_t g = h / (a.n_heads / a.n_kv_heads);
  const float* qp = a.q + t * q_stride + h * d;
  const float* kb = a.k + g * d;
  const float* vb = a.v + g * d;
  __m256 q[NV], acc[NV];
  for (int i = 0; i < NV; ++i) {
    q[i] = _mm256_loadu_ps(qp + 8 * i);
    acc[i] = _mm256_setzero_ps();
  }
  const float l = online_softmax(
      a.p0 + t + 1,
      [&](int64_t j) {
        const float* k = kb + j * kv_stride;
        __m256 c0 = _mm256_setzero_ps(), c1 = _mm256_setzero_ps();
        for (int i = 0; i < NV; i += 2) {
          c0 = _mm256_fmadd_ps(q[i], _mm256_loadu_ps(k + 8 * i), c0);
          c1 = _mm256_fmadd_ps(q[i + 1], _mm256_loadu_ps(k + 8 * i + 8), c1);
        }
        return scale * cpu::hsum8(_mm256_add_ps(c0, c1));
      },
      [&](float c) {
        const __m256 vc = _mm256_set1_ps(c);
        for (int i = 0; i < NV; ++i) acc[i] = _mm256_mul_ps(acc[i], vc);
      },
      [&](float w, int64_t j) {
        const __m256 vw = _mm256_set1_ps(w);
        const float* v = vb + j * kv_stride;
        for (int i = 0; i < NV; ++i) acc[i] = _mm256_fmadd_ps(vw, _mm256_loadu_ps(v + 8 * i), acc[i]);
      });
  float* o = a.out + t * out_stride + h * d;
  const __m256 inv = _mm256_set1_ps(1.0f / l);
  for (int i = 0; i < NV; ++i) _mm256_storeu_ps(o + 8 * i, _mm256_mul_ps(acc[i], inv));
}
#endif

void attend_one(const attention_args& a, int64_t t, int64_t h, int64_t q_stride,
                int64_t kv_stride, int64_t out_stride, float scale) {
  const int64_t d = a.head_dim;
#ifdef __AVX2__
  if (d == 64) return attend_one_fixed<8>(a, t, h, q_stride, kv_stride, out_stride, scale);
  if (d == 128) return attend_one_fixed<16>(a, t, h, q_stride, kv_stride, out_stride, scale);
#endif
  const int64_t g = h / (a.n_heads / a.n_kv_heads);
  const float* q = a.q + t * q_stride + h * d;
  const float* kb = a.k + g * d;
  const float* vb = a.v + g * d;
  float acc[kMaxHeadDim];
  std::fill(acc, acc + d, 0.0f);
  const float l = online_softmax(
      a.p0 + t + 1, [&](int64_t j) { return scale * dot(q, kb + j * kv_stride, d); },
      [&](float c) {
        for (int64_t i = 0; i < d; ++i) acc[i] *= c;
      },
      [&](float w, int64_t j) { scale_add(acc, 1.0f, w, vb + j * kv_stride, d); });
  float* o = a.out + t * out_stride + h * d;
  const float inv = 1.0f / l;
  for (int64_t i = 0; i < d; ++i) o[i] = acc[i] * inv;
}

}  // namespace

void attention(const attention_args& a, thread_pool& pool) {
  if (a.n_heads <= 0 || a.n_kv_heads <= 0 || a.n_heads % a.n_kv_heads != 0 || a.head_dim <= 0 ||
      a.head_dim > kMaxHeadDim || a.n_tokens < 0 || a.p0 < 0) {
    throw invalid_argument_error(
        "attention: need n_kv_heads | n_heads, 0 < head_dim <= 512, n_tokens >= 0, p0 >= 0; got "
        "n_heads=" + std::to_string(a.n_heads) + " n_kv_heads=" + std::to_string(a.n_kv_heads) +
        " head_dim=" + std::to_string(a.head_dim) + " n_tokens=" + std::to_string(a.n_tokens) +
        " p0=" + std::to_string(a.p0));
  }
  const int64_t q_stride = a.q_stride ? a.q_stride : a.n_heads * a.head_dim;
  const int64_t out_stride = a.out_stride ? a.out_stride : a.n_heads * a.head_dim;
  const int64_t kv_stride = a.kv_stride ? a.kv_stride : a.n_kv_heads * a.head_dim;
  const float scale = a.scale != 0.0f ? a.scale : 1.0f / std::sqrt(static_cast<float>(a.head_dim));
  // Work items are (token, head) pairs, head fastest, so a chunk's heads share K/V in cache.
  pool.parallel_for(a.n_tokens * a.n_heads, 1, [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) {
      attend_one(a, i / a.n_heads, i % a.n_heads, q_stride, kv_stride, out_stride, scale);
    }
  });
}

}  // namespace dspark

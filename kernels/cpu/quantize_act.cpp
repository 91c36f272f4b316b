// Rounds float32 activation rows to int8 blocks of 32 for the int8-activation matmul.
//
// Per block: d = max|x| / 127, q = round(x / d) in [-127, 127] (never -128, so the sign trick
// in matmul_q8.cpp cannot overflow), s = d * sum(q). The weights' offset terms (q4_0's -8,
// q4_1's min, q4_k's mins) multiply s, which is the sum of the *rounded* activations, so the
// only error of this mode is the rounding of x itself: at most d / 2 per element.
#include <cmath>

#include "kernels/cpu/matmul_internal.h"

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace dspark::cpu {

void quantize_activations(const float* x, int64_t n_in, int64_t t_begin, int64_t t_end,
                          const matmul_ws& ws) {
  const int64_t nb = n_in / 32;
  for (int64_t t = t_begin; t < t_end; ++t) {
    const float* xt = x + t * n_in;
    int8_t* qt = ws.act_q + t * n_in;
    float* dt = ws.act_d + t * nb;
    float* st = ws.act_s + t * nb;
    for (int64_t b = 0; b < nb; ++b) {
      const float* xb = xt + 32 * b;
#ifdef __AVX2__
      __m256 v[4];
      const __m256 sign = _mm256_set1_ps(-0.0f);
      __m256 amax = _mm256_setzero_ps();
      for (int k = 0; k < 4; ++k) {
        v[k] = _mm256_loadu_ps(xb + 8 * k);
        amax = _mm256_max_ps(amax, _mm256_andnot_ps(sign, v[k]));
      }
      __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(amax), _mm256_extractf128_ps(amax, 1));
      m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
      m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
      const float m = _mm_cvtss_f32(m4);
      const float d = m / 127.0f;
      const __m256 id = _mm256_set1_ps(d != 0.0f ? 1.0f / d : 0.0f);
      __m256i q[4];
      // cvtps rounds to nearest even; |x * id| <= 127 (up to rounding of id), so no clamp
      // beyond 127 is needed except for that last ulp, handled by the saturating packs.
      for (int k = 0; k < 4; ++k) q[k] = _mm256_cvtps_epi32(_mm256_mul_ps(v[k], id));
      const __m256i sum32 = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]),
                                             _mm256_add_epi32(q[2], q[3]));
      __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum32),
                                 _mm256_extracti128_si256(sum32, 1));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
      s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
      // packs work within 128-bit lanes, leaving dwords in the order 0 4 1 5 2 6 3 7.
      const __m256i p16a = _mm256_packs_epi32(q[0], q[1]);
      const __m256i p16b = _mm256_packs_epi32(q[2], q[3]);
      __m256i p8 = _mm256_packs_epi16(p16a, p16b);
      p8 = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
      p8 = _mm256_max_epi8(p8, _mm256_set1_epi8(-127));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(qt + 32 * b), p8);
      dt[b] = d;
      st[b] = d * static_cast<float>(_mm_cvtsi128_si32(s4));
#else
      float m = 0.0f;
      for (int k = 0; k < 32; ++k) m = std::fmax(m, std::fabs(xb[k]));
      const float d = m / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      int sum = 0;
      for (int k = 0; k < 32; ++k) {
        int qi = static_cast<int>(std::nearbyint(xb[k] * id));
        qi = qi > 127 ? 127 : (qi < -127 ? -127 : qi);
        qt[32 * b + k] = static_cast<int8_t>(qi);
        sum += qi;
      }
      dt[b] = d;
      st[b] = d * static_cast<float>(sum);
#endif
    }
  }
}

}  // namespace dspark::cpu

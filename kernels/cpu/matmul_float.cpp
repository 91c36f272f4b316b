// Float-activation matmul: decode a tile of weight rows to float32 once, then take dot
// products with every token row (8-wide FMA, float accumulation). Exact-mode path for
// quantized weights and the only path for f32/f16/bf16 weights.
#include <algorithm>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/cpu/weight_decode.h"

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace dspark::cpu {
namespace {

#ifdef __AVX2__
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// out[t * out_stride + r] = dot(w[r], x[t]) for R rows and T tokens, over n elements.
template <int R, int T>
void dot_tile(const float* const* w, const float* const* x, int64_t n, float* out,
              int64_t out_stride) {
  int64_t i = 0;
  float acc_s[T][R] = {};
#ifdef __AVX2__
  __m256 acc[T][R];
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) acc[t][r] = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    __m256 wv[R];
    for (int r = 0; r < R; ++r) wv[r] = _mm256_loadu_ps(w[r] + i);
    for (int t = 0; t < T; ++t) {
      const __m256 xv = _mm256_loadu_ps(x[t] + i);
      for (int r = 0; r < R; ++r) acc[t][r] = _mm256_fmadd_ps(wv[r], xv, acc[t][r]);
    }
  }
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) acc_s[t][r] = hsum(acc[t][r]);
#endif
  for (; i < n; ++i)
    for (int t = 0; t < T; ++t)
      for (int r = 0; r < R; ++r) acc_s[t][r] += w[r][i] * x[t][i];
  for (int t = 0; t < T; ++t)
    for (int r = 0; r < R; ++r) out[t * out_stride + r] = acc_s[t][r];
}

template <int R>
void dot_rows(const float* const* w, const float* x, int64_t n_in, int64_t n_tokens, float* y,
              int64_t n_out) {
  int64_t t = 0;
  for (; t + 2 <= n_tokens; t += 2) {
    const float* xs[2] = {x + t * n_in, x + (t + 1) * n_in};
    dot_tile<R, 2>(w, xs, n_in, y + t * n_out, n_out);
  }
  if (t < n_tokens) {
    const float* xs[1] = {x + t * n_in};
    dot_tile<R, 1>(w, xs, n_in, y + t * n_out, n_out);
  }
}

}  // namespace

void matmul_f32_rows(const tensor_view& w, const float* x, int64_t n_tokens, float* y,
                     int64_t row_begin, int64_t row_end, float* scratch) {
  const int64_t n_in = w.row_length();
  const int64_t n_out = w.n_rows();
  for (int64_t r0 = row_begin; r0 < row_end; r0 += kFloatTileRows) {
    const int rows = static_cast<int>(std::min<int64_t>(kFloatTileRows, row_end - r0));
    const float* wr[kFloatTileRows];
    for (int r = 0; r < rows; ++r) {
      if (w.type == dtype::f32) {
        wr[r] = reinterpret_cast<const float*>(w.row(r0 + r));
      } else {
        decode_row(w.type, w.row(r0 + r), scratch + r * n_in, n_in);
        wr[r] = scratch + r * n_in;
      }
    }
    float* yr = y + r0;
    switch (rows) {
      case 4: dot_rows<4>(wr, x, n_in, n_tokens, yr, n_out); break;
      case 3: dot_rows<3>(wr, x, n_in, n_tokens, yr, n_out); break;
      case 2: dot_rows<2>(wr, x, n_in, n_tokens, yr, n_out); break;
      default: dot_rows<1>(wr, x, n_in, n_tokens, yr, n_out); break;
    }
  }
}

}  // namespace dspark::cpu

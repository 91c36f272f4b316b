// Int8-activation matrix-vector product (one token: the decode step; also 2-token batches)
// for q4_0, q4_1, q8_0.
//
// With one or two tokens little is reused across tokens, so the prepared-tile path of
// matmul_q8.cpp would mostly add a store and a reload per block. Here each weight block is
// decoded in registers and consumed at once, 4 rows at a time so the 4 accumulation chains
// are independent and the activation block is loaded once per 4 rows. The block's two fp16
// header values are converted together: q4_1's [d, m] (adjacent in memory) times [d_act, s_act]
// gives [d * d_act, m * s_act] in one multiply; the first scales the integer dot product, the
// second is the offset term, accumulated in lane 1 of a separate 128-bit accumulator.
//
// Batch invariance: a row's result must be bitwise the one matmul_q8.cpp's tile kernel gives
// the same token inside any multi-token batch (see that file's header for the argument). Per
// block this kernel does  acc8 = fma(p8, d * d_act, acc8)  and  off = off + round(o * s'),
// with s' = s_act (q4_1) or -8 * s_act (q4_0, o = d), and ends with  hsum8(acc8) + off: the
// tile kernel's sequence exactly. Any change to the float arithmetic here must be mirrored
// there (the KernelsMatmulBatchInvariance tests catch a mismatch).
#include <cstring>
#include <type_traits>

#include "kernels/cpu/matmul_internal.h"
#include "models/formats/quant_blocks.h"

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace dspark::cpu {

#ifdef __AVX2__
namespace {

// The first two fp16 values at p, as floats in lanes 0 and 1.
inline __m128 load_two_halves(const void* p) {
  uint32_t bits;
  std::memcpy(&bits, p, 4);
  return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(bits)));
}

inline __m256i unpack_nibbles16(const uint8_t* qs) {
  const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  const __m256i both = _mm256_blend_epi32(v, _mm256_srli_epi16(v, 4), 0xF0);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// BLOCK: block_q4_0 / block_q4_1 / block_q8_0. y[t * y_stride + r] for R rows starting at
// `rows` and T (1 or 2) tokens starting at t0. With T = 2 each block is decoded once for both
// tokens; the header product then covers both: hdr [d, o, d, o] times act [d_act0, s'0,
// d_act1, s'1], so token t's scale is lane 2t and its offset chain lane 2t + 1, each lane
// computing exactly what lanes 0 and 1 compute for T = 1.
template <class BLOCK, int R, int T>
void vec_rows(const uint8_t* const* rows, const matmul_ws& ws, int64_t n_in, int64_t nb,
              int64_t t0, float* y, int64_t y_stride) {
  static_assert(T == 1 || T == 2);
  constexpr bool kOffset = !std::is_same_v<BLOCK, block_q8_0>;
  __m256 acc[R][T];
  __m128 off[R];
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
    off[r] = _mm_setzero_ps();
  }
  const int8_t* aq = ws.act_q + t0 * n_in;
  const float* ad = ws.act_d + t0 * nb;
  const float* as = ws.act_s + t0 * nb;
  for (int64_t b = 0; b < nb; ++b) {
    __m256i a[T];
    for (int t = 0; t < T; ++t)
      a[t] = _mm256_load_si256(reinterpret_cast<const __m256i*>(aq + t * n_in + 32 * b));
    // [d_act, offset multiplier] per token: q4_1's offset is m * s_act; q4_0's is d * (-8 s_act).
    auto s_mult = [&](int t) {
      return std::is_same_v<BLOCK, block_q4_0> ? -8.0f * as[t * nb + b] : as[t * nb + b];
    };
    const __m128 act = T == 1 ? _mm_setr_ps(ad[b], s_mult(0), 0.0f, 0.0f)
                              : _mm_setr_ps(ad[b], s_mult(0), ad[nb + b], s_mult(T - 1));
    for (int r = 0; r < R; ++r) {
      const BLOCK* blk = reinterpret_cast<const BLOCK*>(rows[r]) + b;
      __m256i p32[T];
      if constexpr (std::is_same_v<BLOCK, block_q8_0>) {
        const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk->qs));
        const __m256i wu = _mm256_sign_epi8(w, w);
        for (int t = 0; t < T; ++t) p32[t] = dot_u8s8_lanes(wu, _mm256_sign_epi8(a[t], w));
      } else {
        const __m256i wq = unpack_nibbles16(blk->qs);
        for (int t = 0; t < T; ++t) p32[t] = dot_u8s8_lanes(wq, a[t]);
      }
      __m128 hdr;
      if constexpr (std::is_same_v<BLOCK, block_q4_1>) {
        hdr = load_two_halves(blk);                  // [d, m]
        if constexpr (T == 2) hdr = _mm_movelh_ps(hdr, hdr);  // [d, m, d, m]
      } else {
        hdr = _mm_cvtph_ps(_mm_cvtsi32_si128(blk->d));
        hdr = T == 1 ? _mm_unpacklo_ps(hdr, hdr) : _mm_broadcastss_ps(hdr);  // [d, d, ...]
      }
      // [d * d_act, offset term] per token; opaque() keeps the offset product rounded on its
      // own (never fused into the add below), as in the tile kernel.
      const __m128 sc = opaque(_mm_mul_ps(hdr, act));
      const __m256 p0 = _mm256_cvtepi32_ps(p32[0]);
      acc[r][0] = _mm256_fmadd_ps(p0, _mm256_broadcastss_ps(sc), acc[r][0]);
      if constexpr (T == 2) {
        const __m256 p1 = _mm256_cvtepi32_ps(p32[T - 1]);
        acc[r][T - 1] = _mm256_fmadd_ps(p1, _mm256_broadcastss_ps(_mm_movehl_ps(sc, sc)), acc[r][T - 1]);
      }
      if constexpr (kOffset) off[r] = _mm_add_ps(off[r], sc);
    }
  }
  alignas(16) float offs[R][4];
  for (int r = 0; r < R; ++r) _mm_store_ps(offs[r], off[r]);
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      float v = hsum8(acc[r][t]);
      if constexpr (kOffset) v += offs[r][2 * t + 1];
      y[t * y_stride + r] = v;
    }
  }
}

template <class BLOCK, int T>
void vec_range_tokens(const tensor_view& w, const matmul_ws& ws, int64_t t0, float* y,
                      int64_t r0, int64_t r1) {
  const int64_t n_in = w.row_length();
  const int64_t nb = n_in / 32;
  const int64_t n_out = w.n_rows();
  float* yt = y + t0 * n_out;
  const size_t stride = w.row_bytes();  // once, not per row (tensor_view::row)
  int64_t r = r0;
  for (; r + 4 <= r1; r += 4) {
    const uint8_t* rows[4] = {w.row(r, stride), w.row(r + 1, stride), w.row(r + 2, stride),
                              w.row(r + 3, stride)};
    vec_rows<BLOCK, 4, T>(rows, ws, n_in, nb, t0, yt + r, n_out);
  }
  for (; r < r1; ++r) {
    const uint8_t* rows[1] = {w.row(r, stride)};
    vec_rows<BLOCK, 1, T>(rows, ws, n_in, nb, t0, yt + r, n_out);
  }
}

// Tokens in pairs, then a single one; each token's rows are computed identically either way.
template <class BLOCK>
void vec_range(const tensor_view& w, const matmul_ws& ws, int64_t n_tokens, float* y,
               int64_t r0, int64_t r1) {
  int64_t t = 0;
  for (; t + 2 <= n_tokens; t += 2) vec_range_tokens<BLOCK, 2>(w, ws, t, y, r0, r1);
  if (t < n_tokens) vec_range_tokens<BLOCK, 1>(w, ws, t, y, r0, r1);
}

}  // namespace

bool matvec_q8_rows(const tensor_view& w, const matmul_ws& ws, int64_t n_tokens, float* y,
                    int64_t row_begin, int64_t row_end) {
  switch (w.type) {
    case dtype::q4_0: vec_range<block_q4_0>(w, ws, n_tokens, y, row_begin, row_end); return true;
    case dtype::q4_1: vec_range<block_q4_1>(w, ws, n_tokens, y, row_begin, row_end); return true;
    case dtype::q8_0: vec_range<block_q8_0>(w, ws, n_tokens, y, row_begin, row_end); return true;
    default: return false;
  }
}

#else

bool matvec_q8_rows(const tensor_view&, const matmul_ws&, int64_t, float*, int64_t, int64_t) {
  return false;
}

#endif

}  // namespace dspark::cpu

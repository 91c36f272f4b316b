// Int8-activation matmul for the quantized weight types (AVX2).
//
// Per row tile of R weight rows, a "prepare" step rewrites the rows into one common form in
// the thread's scratch slot, for every 32-element block b:
//   tile_q  int8/uint8[32]  the block's integer weights, element order 0..31
//   tile_s  float[8]        the weight scale for each int32 lane of a 32-element dot product
//                           (lanes 0-3 cover elements 0-15, lanes 4-7 elements 16-31; all equal
//                           except q6_k, whose scales change every 16 elements)
//   tile_o  float           the block's offset coefficient o (q4_0: d, q4_1: m, q4_k: -dmin*m)
// Then every token row is multiplied against the prepared tile, so the per-type decoding is
// paid once per tile, not once per token. Per block and (row, token) pair:
//   8 x int32 sums of 4 products (dot_u8s8_lanes in matmul_internal.h: maddubs then madd with
//   ones, or one VNNI instruction where the build has it; the same exact integers), convert,
//   then scale by tile_s * d_act and accumulate in float.
// The offset terms sum to  sum_b o[b] * s'[b]  (s' = d_act * sum(q_act), times -8 for q4_0).
//
// Signed weights (q8_0, q6_k) use the sign trick: maddubs needs an unsigned first operand, so
// multiply |w| by sign(w) * a, which has the same product.
//
// BATCH INVARIANCE. Speculative decoding verifies k drafts in one multi-token forward and must
// reproduce one-token decoding bit for bit, so y[t, o] may not depend on n_tokens, on t's
// position in the batch, on the row tile or on the thread split. Argument:
//  * Activations are quantized per token (quantize_act.cpp): q, d_act and s_act of token t
//    depend only on x[t].
//  * Block dot products are integers (exact), converted exactly (|sum| < 2^24).
//  * Float part: every (row, token) pair owns its own accumulators and receives, whatever R
//    and T the tile kernel was instantiated with, the same operations in the same order:
//      acc8 = fma(p8, d_w * d_act, acc8)         for b = 0, 1, ..., nb-1   (explicit FMA)
//      off  = off + round(o[b] * s'[b])          for b = 0, 1, ..., nb-1   (mul, then add)
//      y    = hsum8(acc8) + off                  (hsum8: matmul_internal.h, one fixed order)
//    Lanes of a SIMD register hold different pairs or different elements, never mix pairs.
//    The product in the offset chain passes through opaque() so -ffp-contract=fast cannot fuse
//    it into an FMA in one instantiation and not in another.
//  * The register-only kernel for q4_0/q4_1/q8_0 (matmul_q8_vec.cpp; decode and 2-token
//    batches) performs exactly this sequence too (its odd header-product lanes are the offset
//    chain above; q4_0 applies the -8 to s_act in both kernels, an exact scaling whose result
//    is then multiplied by d in both), so decode (n_tokens = 1) and every row of a verify batch
//    agree bitwise whichever kernel computes them. q4_k and q6_k decode with the tile kernel
//    at T = 1. tests/engine/test_kernels_matmul.cpp checks all of this with memcmp.
#include <algorithm>

#include "kernels/cpu/matmul_internal.h"
#include "kernels/cpu/weight_decode.h"
#include "models/formats/fp16.h"
#include "models/formats/quant_blocks.h"

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace dspark::cpu {

#ifdef __AVX2__

namespace {

constexpr int kTileRows = 4;     // rows prepared at once: kTileRows * n_in * 8.125 bytes of scratch
constexpr int64_t kTokenChunk = 64;  // token rows kept hot in L2 while a row tile is reused
// Up to this many tokens q4_0/q4_1/q8_0 skip the tile. Measured (bench verify sizes, CPU us
// per token for one layer): 2 tokens 140 register-only vs 173 tiled; from 3 on the tile is as
// fast or faster (8 tokens: 122 tiled vs 137).
constexpr int64_t kVecMaxTokens = 2;

// Block-major so the kernel walks one pointer: block b's record is
//   [kTileRows][32] int8 weights, then [kTileRows][8] float lane scales  (256 bytes)
// The offsets are block-major too, so one 128-bit load gives block b's o for the 4 rows.
struct tile {
  uint8_t* qs;  // [nb] records of kRecordBytes
  float* o;     // [nb][kTileRows]
  int64_t nb;
};
constexpr int64_t kRecordBytes = kTileRows * 64;

inline __m256i unpack_nibbles16(const uint8_t* qs) {
  // Byte j holds element j (low nibble) and j + 16 (high nibble): put the 16 bytes in both
  // 128-bit halves, shift the upper half right by 4, then mask.
  const __m256i v = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(qs)));
  const __m256i both = _mm256_blend_epi32(v, _mm256_srli_epi16(v, 4), 0xF0);
  return _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
}

// Writes the prepared form of row `src` (nb blocks of 32) at row slot r of the tile.
void prepare_row(dtype type, const uint8_t* src, const tile& tl, int r) {
  uint8_t* rec = tl.qs + 32 * r;
  float* o = tl.o + r;
  auto put = [&](int64_t b, __m256i wq, __m256 scale, float off) {
    _mm256_store_si256(reinterpret_cast<__m256i*>(rec + b * kRecordBytes), wq);
    _mm256_store_ps(reinterpret_cast<float*>(rec + b * kRecordBytes + kTileRows * 32), scale);
    o[b * kTileRows] = off;
  };
  switch (type) {
    case dtype::q4_0: {
      const auto* blk = reinterpret_cast<const block_q4_0*>(src);
      for (int64_t b = 0; b < tl.nb; ++b) {
        // The -8 is applied to s_act instead (kOffsetQ4_0), exactly as the one-token kernel does.
        const float d = half_to_float(blk[b].d);
        put(b, unpack_nibbles16(blk[b].qs), _mm256_set1_ps(d), d);
      }
      break;
    }
    case dtype::q4_1: {
      const auto* blk = reinterpret_cast<const block_q4_1*>(src);
      for (int64_t b = 0; b < tl.nb; ++b) {
        put(b, unpack_nibbles16(blk[b].qs), _mm256_set1_ps(half_to_float(blk[b].d)),
            half_to_float(blk[b].m));
      }
      break;
    }
    case dtype::q8_0: {
      const auto* blk = reinterpret_cast<const block_q8_0*>(src);
      for (int64_t b = 0; b < tl.nb; ++b) {
        put(b, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[b].qs)),
            _mm256_set1_ps(half_to_float(blk[b].d)), 0.0f);
      }
      break;
    }
    case dtype::q4_k: {
      const auto* blk = reinterpret_cast<const block_q4_k*>(src);
      const __m256i mask = _mm256_set1_epi8(0x0F);
      for (int64_t sb = 0; sb < tl.nb / 8; ++sb) {
        const float d = half_to_float(blk[sb].d);
        const float dmin = half_to_float(blk[sb].dmin);
        for (int c = 0; c < 4; ++c) {
          // 32 bytes: low nibbles are sub-block 2c, high nibbles sub-block 2c + 1.
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[sb].qs + 32 * c));
          for (int h = 0; h < 2; ++h) {
            uint8_t sc, mn;
            q4_k_scale_min(blk[sb].scales, 2 * c + h, sc, mn);
            const __m256i wq = _mm256_and_si256(h ? _mm256_srli_epi16(v, 4) : v, mask);
            put(sb * 8 + 2 * c + h, wq, _mm256_set1_ps(d * sc), -dmin * mn);
          }
        }
      }
      break;
    }
    case dtype::q6_k: {
      const auto* blk = reinterpret_cast<const block_q6_k*>(src);
      const __m256i mask4 = _mm256_set1_epi8(0x0F);
      const __m256i mask2 = _mm256_set1_epi8(0x03);
      const __m256i bias = _mm256_set1_epi8(32);
      for (int64_t sb = 0; sb < tl.nb / 8; ++sb) {
        const float d = half_to_float(blk[sb].d);
        for (int j = 0; j < 8; ++j) {
          // Block j of the super-block: half h = j / 4, group k = j % 4. Its element l takes
          // the nibble (low for k < 2) of ql[64h + 32(k&1) + l] and bits 2k..2k+1 of qh[32h + l].
          const int h = j / 4, k = j % 4;
          const __m256i ql = _mm256_loadu_si256(
              reinterpret_cast<const __m256i*>(blk[sb].ql + 64 * h + 32 * (k & 1)));
          const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk[sb].qh + 32 * h));
          const __m256i lo = _mm256_and_si256(k >= 2 ? _mm256_srli_epi16(ql, 4) : ql, mask4);
          const __m256i hi = _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k)), mask2);
          const __m256i wq = _mm256_sub_epi8(_mm256_or_si256(lo, _mm256_slli_epi16(hi, 4)), bias);
          const int8_t* sc = blk[sb].scales + 8 * h + 2 * k;
          const __m256 scale = _mm256_setr_m128(_mm_set1_ps(d * sc[0]), _mm_set1_ps(d * sc[1]));
          put(sb * 8 + j, wq, scale, 0.0f);
        }
      }
      break;
    }
    default:
      break;
  }
}

// Offset handling of a dtype: none (q8_0, q6_k), o * s_act (q4_1, q4_k), o * (-8 s_act) (q4_0).
enum offset_kind : int { kOffsetNone = 0, kOffsetPlain = 1, kOffsetQ4_0 = 2 };

// Adds block b's offset products for the pairs (rows 0..3, token t) to the 4 lanes of `off`:
// lane r does off = off + round(o[b][r] * s'), the same chain as lane 1 of the one-token kernel.
template <int OFF>
inline __m128 offset_step4(__m128 off, const float* o_b, const float* s_tb) {
  __m128 s = _mm_broadcast_ss(s_tb);
  if constexpr (OFF == kOffsetQ4_0) s = _mm_mul_ps(s, _mm_set1_ps(-8.0f));  // exact
  return _mm_add_ps(off, opaque(_mm_mul_ps(_mm_load_ps(o_b), s)));
}

// y[t * y_stride + r] for R prepared rows and T tokens starting at t0. Every (r, t) pair gets
// the same float operations whatever R and T are (see the file header).
template <bool SIGNED, int OFF, int R, int T>
void tile_kernel(const tile& tl, const matmul_ws& ws, int64_t n_in, int64_t t0, float* y,
                 int64_t y_stride) {
  const int64_t nb = tl.nb;
  __m256 acc[R][T];
  for (int r = 0; r < R; ++r)
    for (int t = 0; t < T; ++t) acc[r][t] = _mm256_setzero_ps();
  const int8_t* aq = ws.act_q + t0 * n_in;  // token t's block b at aq + t * n_in + 32 * b
  const float* ad = ws.act_d + t0 * nb;
  const uint8_t* rec = tl.qs;
  for (int64_t b = 0; b < nb; ++b, aq += 32, ad += 1, rec += kRecordBytes) {
    __m256i a[T];
    for (int t = 0; t < T; ++t) a[t] = _mm256_load_si256(reinterpret_cast<const __m256i*>(aq + t * n_in));
    for (int r = 0; r < R; ++r) {
      const __m256i wq = _mm256_load_si256(reinterpret_cast<const __m256i*>(rec + 32 * r));
      const __m256 ws8 = _mm256_load_ps(reinterpret_cast<const float*>(rec + kTileRows * 32 + 32 * r));
      const __m256i wu = SIGNED ? _mm256_sign_epi8(wq, wq) : wq;  // |w|
      for (int t = 0; t < T; ++t) {
        const __m256i at = SIGNED ? _mm256_sign_epi8(a[t], wq) : a[t];
        const __m256 p = _mm256_cvtepi32_ps(dot_u8s8_lanes(wu, at));
        // Lane-wise d_w * d_act: the same rounded product as the one-token kernel's d * d_act.
        const __m256 scale = _mm256_mul_ps(ws8, _mm256_broadcast_ss(ad + t * nb));
        acc[r][t] = _mm256_fmadd_ps(p, scale, acc[r][t]);
      }
    }
  }
  // Offset chains, one lane per row, one register per token; kept out of the main loop so
  // its 8 accumulators and operands stay in registers. Unused row lanes hold o = 0.
  alignas(16) float off[T][4] = {};
  if constexpr (OFF != kOffsetNone) {
    const float* s = ws.act_s + t0 * nb;
    if constexpr (T == 2) {
      // Both tokens in one 256-bit register: lanes 0-3 token 0, lanes 4-7 token 1.
      __m256 v = _mm256_setzero_ps();
      for (int64_t b = 0; b < nb; ++b) {
        const __m256 o8 = _mm256_broadcast_ps(reinterpret_cast<const __m128*>(tl.o + b * kTileRows));
        __m256 s8 = _mm256_setr_m128(_mm_broadcast_ss(s + b), _mm_broadcast_ss(s + nb + b));
        if constexpr (OFF == kOffsetQ4_0) s8 = _mm256_mul_ps(s8, _mm256_set1_ps(-8.0f));  // exact
        v = _mm256_add_ps(v, opaque(_mm256_mul_ps(o8, s8)));
      }
      _mm256_store_ps(&off[0][0], v);
    } else {
      for (int t = 0; t < T; ++t) {
        __m128 v = _mm_setzero_ps();
        for (int64_t b = 0; b < nb; ++b) v = offset_step4<OFF>(v, tl.o + b * kTileRows, s + t * nb + b);
        _mm_store_ps(off[t], v);
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      float v = hsum8(acc[r][t]);
      if constexpr (OFF != kOffsetNone) v += off[t][r];
      y[t * y_stride + r] = v;
    }
  }
}

template <bool SIGNED, int OFF, int R>
void tile_tokens(const tile& tl, const matmul_ws& ws, int64_t n_in, int64_t t_begin,
                 int64_t t_end, float* y, int64_t n_out) {
  int64_t t = t_begin;
  for (; t + 2 <= t_end; t += 2) tile_kernel<SIGNED, OFF, R, 2>(tl, ws, n_in, t, y + t * n_out, n_out);
  if (t < t_end) tile_kernel<SIGNED, OFF, R, 1>(tl, ws, n_in, t, y + t * n_out, n_out);
}

template <bool SIGNED, int OFF>
void rows_kernel(const tensor_view& w, const matmul_ws& ws, int64_t n_tokens, float* y,
                 int64_t row_begin, int64_t row_end, const tile& tl) {
  const int64_t n_in = w.row_length();
  const int64_t n_out = w.n_rows();
  const size_t stride = w.row_bytes();  // once, not per row (tensor_view::row)
  for (int64_t c0 = 0; c0 < n_tokens; c0 += kTokenChunk) {
    const int64_t c1 = std::min(n_tokens, c0 + kTokenChunk);
    for (int64_t r0 = row_begin; r0 < row_end; r0 += kTileRows) {
      const int rows = static_cast<int>(std::min<int64_t>(kTileRows, row_end - r0));
      for (int r = 0; r < rows; ++r) prepare_row(w.type, w.row(r0 + r, stride), tl, r);
      if (rows < kTileRows) {  // unused lanes of the offset loads: keep them finite
        for (int64_t b = 0; b < tl.nb; ++b)
          for (int r = rows; r < kTileRows; ++r) tl.o[b * kTileRows + r] = 0.0f;
      }
      float* yr = y + r0;
      switch (rows) {
        case 4: tile_tokens<SIGNED, OFF, 4>(tl, ws, n_in, c0, c1, yr, n_out); break;
        case 3: tile_tokens<SIGNED, OFF, 3>(tl, ws, n_in, c0, c1, yr, n_out); break;
        case 2: tile_tokens<SIGNED, OFF, 2>(tl, ws, n_in, c0, c1, yr, n_out); break;
        default: tile_tokens<SIGNED, OFF, 1>(tl, ws, n_in, c0, c1, yr, n_out); break;
      }
    }
  }
}

}  // namespace

bool has_q8_kernel(dtype t) {
  return t == dtype::q4_0 || t == dtype::q4_1 || t == dtype::q8_0 || t == dtype::q4_k ||
         t == dtype::q6_k;
}

void matmul_q8_rows(const tensor_view& w, const matmul_ws& ws, int64_t n_tokens, float* y,
                    int64_t row_begin, int64_t row_end, float* scratch) {
  // Few tokens: preparing a tile (store + reload per block) costs more than it saves.
  if (n_tokens <= kVecMaxTokens && matvec_q8_rows(w, ws, n_tokens, y, row_begin, row_end)) return;
  // Carve the prepared tile out of the thread's slot (64-byte aligned pieces).
  const int64_t nb = w.row_length() / 32;
  auto* base = reinterpret_cast<uint8_t*>(scratch);
  tile tl;
  tl.nb = nb;
  tl.qs = base;
  tl.o = reinterpret_cast<float*>(base + nb * kRecordBytes);
  switch (w.type) {
    case dtype::q8_0:
    case dtype::q6_k: rows_kernel<true, kOffsetNone>(w, ws, n_tokens, y, row_begin, row_end, tl); break;
    case dtype::q4_0: rows_kernel<false, kOffsetQ4_0>(w, ws, n_tokens, y, row_begin, row_end, tl); break;
    default: rows_kernel<false, kOffsetPlain>(w, ws, n_tokens, y, row_begin, row_end, tl); break;
  }
}

#else  // no AVX2: every dtype takes the float path

bool has_q8_kernel(dtype) { return false; }

void matmul_q8_rows(const tensor_view&, const matmul_ws&, int64_t, float*, int64_t, int64_t,
                    float*) {}

#endif

}  // namespace dspark::cpu

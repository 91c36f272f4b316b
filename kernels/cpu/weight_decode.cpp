// Weight-row decoders: one function per stored type, AVX2 for the 32-element block types.
#include "kernels/cpu/weight_decode.h"

#include <cstring>

#include "common/error.h"
#include "models/formats/fp16.h"
#include "models/formats/quant_blocks.h"

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace dspark::cpu {
namespace {

void decode_f16(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
#ifdef __AVX2__
  for (; i + 8 <= n; i += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
  }
#endif
  for (; i < n; ++i) dst[i] = half_to_float(src[i]);
}

void decode_bf16(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
#ifdef __AVX2__
  for (; i + 8 <= n; i += 8) {
    // bf16 is the top half of a float: widen to 32 bits and shift into place.
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    const __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
    _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(w));
  }
#endif
  for (; i < n; ++i) dst[i] = bf16_to_fp32(src[i]);
}

// q4_0 and q4_1 share the nibble order: byte j holds element j (low) and j + 16 (high).
// x = d * q + offset, with offset = -8 d (q4_0) or m (q4_1).
inline void decode_nibbles32(const uint8_t* qs, float d, float offset, float* y) {
#ifdef __AVX2__
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(qs));
  const __m128i mask = _mm_set1_epi8(0x0F);
  const __m128i lo = _mm_and_si128(bytes, mask);
  const __m128i hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), mask);
  const __m256 vd = _mm256_set1_ps(d);
  const __m256 vo = _mm256_set1_ps(offset);
  auto put8 = [&](__m128i q8, float* out) {
    const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(q8));
    _mm256_storeu_ps(out, _mm256_fmadd_ps(vd, f, vo));
  };
  put8(lo, y);
  put8(_mm_srli_si128(lo, 8), y + 8);
  put8(hi, y + 16);
  put8(_mm_srli_si128(hi, 8), y + 24);
#else
  for (int j = 0; j < 16; ++j) {
    y[j] = d * static_cast<float>(qs[j] & 0x0F) + offset;
    y[j + 16] = d * static_cast<float>(qs[j] >> 4) + offset;
  }
#endif
}

void decode_q4_0(const block_q4_0* b, float* dst, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = half_to_float(b[i].d);
    decode_nibbles32(b[i].qs, d, -8.0f * d, dst + 32 * i);
  }
}

void decode_q4_1(const block_q4_1* b, float* dst, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    decode_nibbles32(b[i].qs, half_to_float(b[i].d), half_to_float(b[i].m), dst + 32 * i);
  }
}

void decode_q8_0(const block_q8_0* b, float* dst, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = half_to_float(b[i].d);
    float* y = dst + 32 * i;
#ifdef __AVX2__
    const __m256 vd = _mm256_set1_ps(d);
    for (int k = 0; k < 32; k += 8) {
      const __m128i q = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b[i].qs + k));
      _mm256_storeu_ps(y + k, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q))));
    }
#else
    for (int k = 0; k < 32; ++k) y[k] = d * static_cast<float>(b[i].qs[k]);
#endif
  }
}

void decode_q4_k(const block_q4_k* b, float* dst, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = half_to_float(b[i].d);
    const float dmin = half_to_float(b[i].dmin);
    float* y = dst + QK_K * i;
    // 4 chunks of 64: 32 bytes whose low nibbles are sub-block 2c, high nibbles 2c + 1.
    for (int c = 0; c < 4; ++c) {
      uint8_t sc0, m0, sc1, m1;
      q4_k_scale_min(b[i].scales, 2 * c, sc0, m0);
      q4_k_scale_min(b[i].scales, 2 * c + 1, sc1, m1);
      const float d0 = d * sc0, o0 = -dmin * m0, d1 = d * sc1, o1 = -dmin * m1;
      const uint8_t* q = b[i].qs + 32 * c;
      for (int l = 0; l < 32; ++l) {
        y[64 * c + l] = d0 * static_cast<float>(q[l] & 0x0F) + o0;
        y[64 * c + 32 + l] = d1 * static_cast<float>(q[l] >> 4) + o1;
      }
    }
  }
}

void decode_q6_k(const block_q6_k* b, float* dst, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = half_to_float(b[i].d);
    // Two halves of 128: ql holds low 4 bits (64 bytes, two nibbles each), qh the high 2 bits
    // of four elements per byte; element l + 32 k of the half uses bits 2k..2k+1 of qh[l].
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = b[i].ql + 64 * h;
      const uint8_t* qh = b[i].qh + 32 * h;
      const int8_t* sc = b[i].scales + 8 * h;
      float* y = dst + QK_K * i + 128 * h;
      for (int l = 0; l < 32; ++l) {
        const int s = l / 16;
        const int q0 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q1 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q2 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q3 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * sc[s + 0] * static_cast<float>(q0);
        y[l + 32] = d * sc[s + 2] * static_cast<float>(q1);
        y[l + 64] = d * sc[s + 4] * static_cast<float>(q2);
        y[l + 96] = d * sc[s + 6] * static_cast<float>(q3);
      }
    }
  }
}

}  // namespace

void decode_row(dtype t, const uint8_t* src, float* dst, int64_t n) {
  switch (t) {
    case dtype::f32: std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float)); return;
    case dtype::f16: decode_f16(reinterpret_cast<const uint16_t*>(src), dst, n); return;
    case dtype::bf16: decode_bf16(reinterpret_cast<const uint16_t*>(src), dst, n); return;
    case dtype::q4_0: decode_q4_0(reinterpret_cast<const block_q4_0*>(src), dst, n / QK4_0); return;
    case dtype::q4_1: decode_q4_1(reinterpret_cast<const block_q4_1*>(src), dst, n / QK4_1); return;
    case dtype::q8_0: decode_q8_0(reinterpret_cast<const block_q8_0*>(src), dst, n / QK8_0); return;
    case dtype::q4_k: decode_q4_k(reinterpret_cast<const block_q4_k*>(src), dst, n / QK_K); return;
    case dtype::q6_k: decode_q6_k(reinterpret_cast<const block_q6_k*>(src), dst, n / QK_K); return;
  }
  throw invalid_argument_error("decode_row: unsupported dtype id " +
                               std::to_string(static_cast<uint32_t>(t)));
}

}  // namespace dspark::cpu

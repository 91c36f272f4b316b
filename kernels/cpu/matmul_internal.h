// Shared plumbing of the matmul kernels: workspace layout and the per-mode entry points.
//
// Workspace (all offsets 64-byte aligned):
//   [act_q]   int8  [n_tokens][n_in]      activations rounded to int8, blocks of 32
//   [act_d]   float [n_tokens][n_in/32]   block scales d (x ~= d * q)
//   [act_s]   float [n_tokens][n_in/32]   block sums d * sum(q), for the weights' offset terms
//   [scratch] kMatmulMaxThreads slots of kFloatTileRows * n_in floats: decoded weight rows
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/matmul.h"

#ifdef __AVX2__
#include <immintrin.h>
#endif

namespace dspark::cpu {

#ifdef __AVX2__
// Horizontal sum of 8 floats in one fixed order. Every q8 kernel reduces its accumulators with
// this one function, so a (row, token) result cannot depend on which kernel produced it.
inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Returns v unchanged, but hides its origin from the optimizer. The project builds with -mfma
// in GNU mode (-ffp-contract=fast), where GCC may fuse a multiply intrinsic with a following
// add into one FMA (one rounding instead of two), and whether it does depends on the
// surrounding code. Passing a product through opaque() before adding it pins the "round the
// product, then add" sequence in every kernel that must agree bitwise. Emits no instruction.
template <class V>
inline V opaque(V v) {
  asm("" : "+x"(v));
  return v;
}

// The integer part of a 32-element block's dot product: int32 lane i = sum over j = 4i..4i+3 of
// u[j] * s[j] (u unsigned bytes, s signed). With VNNI (a -march=native build on a CPU that has
// AVX-512 VNNI or AVX-VNNI) that is one instruction; otherwise maddubs (pairs, to int16) then
// madd with ones (pairs of pairs, to int32). The lanes are the same exact integers either way:
// maddubs cannot saturate on what the kernels pass (|u| <= 128, |s| <= 127: 2 * 128 * 127 <
// 2^15) and VNNI adds the four products without an int16 step, so kernels built either way
// give bit-identical rows.
inline __m256i dot_u8s8_lanes(__m256i u, __m256i s) {
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, s);
#elif defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
#endif
}
#endif

// Rows decoded at once by the float-activation kernel.
constexpr int kFloatTileRows = 4;

struct matmul_ws {
  int8_t* act_q = nullptr;
  float* act_d = nullptr;
  float* act_s = nullptr;
  float* scratch = nullptr;
  size_t scratch_stride = 0;  // floats per thread slot
  size_t total_bytes = 0;
};

// Carves a workspace for n_in x n_tokens (base may be null to only compute total_bytes).
matmul_ws layout_workspace(void* base, int64_t n_in, int64_t n_tokens);

// Float-activation product over output rows [row_begin, row_end), any dtype; `scratch` holds
// kFloatTileRows * n_in floats.
void matmul_f32_rows(const tensor_view& w, const float* x, int64_t n_tokens, float* y,
                     int64_t row_begin, int64_t row_end, float* scratch);

// True when the dtype has an int8-activation kernel (AVX2 builds: all quantized types).
bool has_q8_kernel(dtype t);

// Quantizes token rows [t_begin, t_end) of x into ws.act_q/act_d/act_s (n_in % 32 == 0).
void quantize_activations(const float* x, int64_t n_in, int64_t t_begin, int64_t t_end,
                          const matmul_ws& ws);

// Int8-activation product over output rows [row_begin, row_end); activations already
// quantized into ws; `scratch` is one thread's slot (ws.scratch_stride floats).
void matmul_q8_rows(const tensor_view& w, const matmul_ws& ws, int64_t n_tokens, float* y,
                    int64_t row_begin, int64_t row_end, float* scratch);

// Register-only form of matmul_q8_rows for q4_0, q4_1 and q8_0 (no prepared tile: each block is
// decoded in registers for up to 2 tokens at once), used for decode and short verify batches;
// writes y[t, row_begin..row_end) for t < n_tokens; returns false (and does nothing) for other
// dtypes. Its rows are bitwise those of the tile kernel (matmul_q8.cpp header).
bool matvec_q8_rows(const tensor_view& w, const matmul_ws& ws, int64_t n_tokens, float* y,
                    int64_t row_begin, int64_t row_end);

}  // namespace dspark::cpu

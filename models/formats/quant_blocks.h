// Block layouts of ggml's quantized types, byte-exact with GGUF files.
//
// Each block holds `QK*` consecutive elements of one row. Scales are IEEE half floats stored as
// raw uint16_t (see fp16.h). The decoding formulas (reference: dequantize_row in dtype.cpp):
//   q4_0: x = d * (q - 8)              q = 4-bit, low nibbles are elements 0..15, high 16..31
//   q4_1: x = d * q + m                same nibble order as q4_0
//   q8_0: x = d * q                    q = int8
//   q4_k: super-block of 256 = 8 sub-blocks of 32, 6-bit sub-scales and sub-mins packed in
//         `scales`; x = d * sc * q - dmin * m
//   q6_k: super-block of 256 = 16 sub-blocks of 16, int8 sub-scales; x = d * sc * (q - 32),
//         q's low 4 bits in ql, high 2 bits in qh
#pragma once

#include <cstdint>

namespace dspark {

constexpr int QK4_0 = 32;
constexpr int QK4_1 = 32;
constexpr int QK8_0 = 32;
constexpr int QK_K = 256;
constexpr int K_SCALE_SIZE = 12;

struct block_q4_0 {
  uint16_t d;              // scale, fp16
  uint8_t qs[QK4_0 / 2];   // nibbles
};
static_assert(sizeof(block_q4_0) == 18);

struct block_q4_1 {
  uint16_t d;              // scale, fp16
  uint16_t m;              // minimum, fp16
  uint8_t qs[QK4_1 / 2];   // nibbles
};
static_assert(sizeof(block_q4_1) == 20);

struct block_q8_0 {
  uint16_t d;              // scale, fp16
  int8_t qs[QK8_0];
};
static_assert(sizeof(block_q8_0) == 34);

struct block_q4_k {
  uint16_t d;                     // super-block scale for the sub-scales, fp16
  uint16_t dmin;                  // super-block scale for the sub-mins, fp16
  uint8_t scales[K_SCALE_SIZE];   // 8 scales and 8 mins, 6 bits each
  uint8_t qs[QK_K / 2];           // nibbles
};
static_assert(sizeof(block_q4_k) == 144);

struct block_q6_k {
  uint8_t ql[QK_K / 2];       // low 4 bits
  uint8_t qh[QK_K / 4];       // high 2 bits
  int8_t scales[QK_K / 16];   // 8-bit sub-scales
  uint16_t d;                 // super-block scale, fp16
};
static_assert(sizeof(block_q6_k) == 210);

}  // namespace dspark

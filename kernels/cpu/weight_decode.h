// Decoding of weight rows from their stored type to float32, for the CPU kernels.
//
// This is the kernels' own decoder (AVX2 where it matters), kept separate from
// dequantize_row in models/formats/dtype.cpp so the tests can use that one as an independent
// reference. Block layouts: models/formats/quant_blocks.h.
#pragma once

#include <cstdint>

#include "models/formats/dtype.h"
#include "models/formats/fp16.h"

#ifdef __F16C__
#include <immintrin.h>
#endif

namespace dspark::cpu {

// Decodes n elements (a multiple of t's block size) of one row starting at src into dst.
void decode_row(dtype t, const uint8_t* src, float* dst, int64_t n);

// fp16 -> fp32 in one instruction where F16C exists (fp16.h's portable version branches).
inline float half_to_float(uint16_t h) {
#ifdef __F16C__
  return _cvtsh_ss(h);
#else
  return fp16_to_fp32(h);
#endif
}

// Unpacks the 6-bit scale and min of sub-block j (0..7) of a q4_k super-block.
inline void q4_k_scale_min(const uint8_t* scales, int j, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = scales[j] & 63;
    m = scales[j + 4] & 63;
  } else {
    // Sub-blocks 4..7 keep their low 4 bits in bytes 8..11 and their top 2 bits in the spare
    // high bits of bytes 0..7.
    sc = static_cast<uint8_t>((scales[j + 4] & 0x0F) | ((scales[j - 4] >> 6) << 4));
    m = static_cast<uint8_t>((scales[j + 4] >> 4) | ((scales[j] >> 6) << 4));
  }
}

}  // namespace dspark::cpu

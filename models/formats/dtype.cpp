// Element-type traits and scalar (reference) dequantization of every supported weight type.
//
// These loops are the reference the SIMD/CUDA kernels are tested against, so they favour
// clarity over speed. Blocks are copied out with memcpy: tensor data in safetensors (and test
// buffers) need not be aligned to the block's fields.
#include "models/formats/dtype.h"

#include <cstring>
#include <limits>
#include <string>

#include "common/error.h"
#include "models/formats/fp16.h"
#include "models/formats/quant_blocks.h"

namespace dspark {

namespace {

constexpr dtype_traits k_f32{"f32", 1, 4};
constexpr dtype_traits k_f16{"f16", 1, 2};
constexpr dtype_traits k_bf16{"bf16", 1, 2};
constexpr dtype_traits k_q4_0{"q4_0", QK4_0, sizeof(block_q4_0)};
constexpr dtype_traits k_q4_1{"q4_1", QK4_1, sizeof(block_q4_1)};
constexpr dtype_traits k_q8_0{"q8_0", QK8_0, sizeof(block_q8_0)};
constexpr dtype_traits k_q4_k{"q4_k", QK_K, sizeof(block_q4_k)};
constexpr dtype_traits k_q6_k{"q6_k", QK_K, sizeof(block_q6_k)};

const dtype_traits* lookup(uint32_t id) {
  switch (static_cast<dtype>(id)) {
    case dtype::f32: return &k_f32;
    case dtype::f16: return &k_f16;
    case dtype::bf16: return &k_bf16;
    case dtype::q4_0: return &k_q4_0;
    case dtype::q4_1: return &k_q4_1;
    case dtype::q8_0: return &k_q8_0;
    case dtype::q4_k: return &k_q4_k;
    case dtype::q6_k: return &k_q6_k;
  }
  return nullptr;
}

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

void dequant_q4_0(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, dst += QK4_0) {
    const auto blk = load<block_q4_0>(src + b * sizeof(block_q4_0));
    const float d = fp16_to_fp32(blk.d);
    for (int i = 0; i < QK4_0 / 2; ++i) {
      dst[i] = d * static_cast<float>((blk.qs[i] & 0x0f) - 8);
      dst[i + QK4_0 / 2] = d * static_cast<float>((blk.qs[i] >> 4) - 8);
    }
  }
}

void dequant_q4_1(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, dst += QK4_1) {
    const auto blk = load<block_q4_1>(src + b * sizeof(block_q4_1));
    const float d = fp16_to_fp32(blk.d);
    const float m = fp16_to_fp32(blk.m);
    for (int i = 0; i < QK4_1 / 2; ++i) {
      dst[i] = d * static_cast<float>(blk.qs[i] & 0x0f) + m;
      dst[i + QK4_1 / 2] = d * static_cast<float>(blk.qs[i] >> 4) + m;
    }
  }
}

void dequant_q8_0(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, dst += QK8_0) {
    const auto blk = load<block_q8_0>(src + b * sizeof(block_q8_0));
    const float d = fp16_to_fp32(blk.d);
    for (int i = 0; i < QK8_0; ++i) dst[i] = d * static_cast<float>(blk.qs[i]);
  }
}

// Q4_K's 12 scale bytes hold eight 6-bit scales and eight 6-bit mins:
//   bytes 0..3:  low 6 bits = scale j (j<4),  top 2 bits = bits 4..5 of scale j+4
//   bytes 4..7:  low 6 bits = min j   (j<4),  top 2 bits = bits 4..5 of min j+4
//   bytes 8..11: low nibble = bits 0..3 of scale j+4, high nibble = bits 0..3 of min j+4
void q4_k_scale_min(const uint8_t* s, int j, int& scale, int& min) {
  if (j < 4) {
    scale = s[j] & 0x3f;
    min = s[j + 4] & 0x3f;
  } else {
    scale = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
    min = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}

// 256 elements = 8 sub-blocks of 32. qs is 4 runs of 32 bytes; run r holds sub-block 2r in its
// low nibbles and sub-block 2r+1 in its high nibbles.
void dequant_q4_k(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, dst += QK_K) {
    const auto blk = load<block_q4_k>(src + b * sizeof(block_q4_k));
    const float d = fp16_to_fp32(blk.d);
    const float dmin = fp16_to_fp32(blk.dmin);
    for (int sub = 0; sub < 8; ++sub) {
      int sc = 0, mn = 0;
      q4_k_scale_min(blk.scales, sub, sc, mn);
      const float d_sub = d * static_cast<float>(sc);
      const float m_sub = dmin * static_cast<float>(mn);
      const uint8_t* q = blk.qs + (sub / 2) * 32;
      const int shift = (sub % 2) * 4;
      for (int i = 0; i < 32; ++i) {
        dst[sub * 32 + i] = d_sub * static_cast<float>((q[i] >> shift) & 0x0f) - m_sub;
      }
    }
  }
}

// 256 elements = 2 halves of 128; 16 sub-blocks of 16 share one int8 scale each. In half h,
// for l < 32, the 6-bit values of elements l, l+32, l+64, l+96 are
//   low 4 bits: ql[64h + l] & 15, ql[64h + l + 32] & 15, ql[64h + l] >> 4, ql[64h + l + 32] >> 4
//   high 2 bits: bits 0-1, 2-3, 4-5, 6-7 of qh[32h + l]
// and x = d * scale[element / 16] * (q - 32).
void dequant_q6_k(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, dst += QK_K) {
    const auto blk = load<block_q6_k>(src + b * sizeof(block_q6_k));
    const float d = fp16_to_fp32(blk.d);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = blk.ql + 64 * h;
      const uint8_t* qh = blk.qh + 32 * h;
      float* y = dst + 128 * h;
      for (int l = 0; l < 32; ++l) {
        const int q[4] = {
            ((ql[l] & 0x0f) | (((qh[l] >> 0) & 3) << 4)) - 32,
            ((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32,
            ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32,
            ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32,
        };
        for (int k = 0; k < 4; ++k) {
          const int e = 128 * h + 32 * k + l;  // element index inside the super-block
          const float d_sub = d * static_cast<float>(blk.scales[e / 16]);
          y[32 * k + l] = d_sub * static_cast<float>(q[k]);
        }
      }
    }
  }
}

}  // namespace

std::optional<dtype_traits> dtype_traits_of(uint32_t ggml_type_id) {
  const dtype_traits* t = lookup(ggml_type_id);
  if (t == nullptr) return std::nullopt;
  return *t;
}

const dtype_traits& traits(dtype t) {
  const dtype_traits* tr = lookup(static_cast<uint32_t>(t));
  if (tr == nullptr) {
    throw format_error("unsupported tensor type id " + std::to_string(static_cast<uint32_t>(t)) +
                       " (supported: f32=0 f16=1 q4_0=2 q4_1=3 q8_0=8 q4_k=12 q6_k=14 bf16=30)");
  }
  return *tr;
}

size_t bytes_for(dtype t, int64_t n_elements) {
  const dtype_traits& tr = traits(t);
  if (n_elements < 0 || n_elements % tr.block_size != 0) {
    throw format_error(std::string(tr.name) + ": element count " + std::to_string(n_elements) +
                       " is not a non-negative multiple of the block size " +
                       std::to_string(tr.block_size));
  }
  const int64_t n_blocks = n_elements / tr.block_size;
  if (n_blocks > std::numeric_limits<int64_t>::max() / tr.type_size) {
    throw format_error(std::string(tr.name) + ": element count " + std::to_string(n_elements) +
                       " overflows a byte size");
  }
  return static_cast<size_t>(n_blocks * tr.type_size);
}

void dequantize_row(dtype t, const void* src, float* dst, int64_t n) {
  const dtype_traits& tr = traits(t);
  if (n < 0 || n % tr.block_size != 0) {
    throw format_error(std::string(tr.name) + ": dequantize of " + std::to_string(n) +
                       " elements, not a multiple of the block size " +
                       std::to_string(tr.block_size));
  }
  const auto* s = static_cast<const uint8_t*>(src);
  const int64_t n_blocks = n / tr.block_size;
  switch (t) {
    case dtype::f32:
      if (n > 0) std::memcpy(dst, s, static_cast<size_t>(n) * sizeof(float));
      return;
    case dtype::f16:
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(load<uint16_t>(s + 2 * i));
      return;
    case dtype::bf16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load<uint16_t>(s + 2 * i));
      return;
    case dtype::q4_0: dequant_q4_0(s, dst, n_blocks); return;
    case dtype::q4_1: dequant_q4_1(s, dst, n_blocks); return;
    case dtype::q8_0: dequant_q8_0(s, dst, n_blocks); return;
    case dtype::q4_k: dequant_q4_k(s, dst, n_blocks); return;
    case dtype::q6_k: dequant_q6_k(s, dst, n_blocks); return;
  }
}

}  // namespace dspark

// Helpers for the kernel tests: random valid weight tensors of every dtype, NaN poisoning,
// and a 64-byte-aligned buffer.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "models/formats/dtype.h"
#include "models/formats/fp16.h"
#include "models/formats/quant_blocks.h"
#include "models/formats/tensor_view.h"

namespace dspark::test {

struct aligned_free_deleter {
  void operator()(void* p) const { std::free(p); }
};

// A zeroed 64-byte-aligned buffer of at least `bytes` bytes.
inline std::unique_ptr<uint8_t, aligned_free_deleter> aligned_buffer(size_t bytes) {
  const size_t n = ((bytes + 63) / 64) * 64 + 64;
  auto* p = static_cast<uint8_t*>(std::aligned_alloc(64, n));
  std::memset(p, 0, n);
  return std::unique_ptr<uint8_t, aligned_free_deleter>(p);
}

inline void poison(std::vector<float>& v) {
  std::fill(v.begin(), v.end(), std::numeric_limits<float>::quiet_NaN());
}

inline std::vector<float> random_floats(std::mt19937& rng, size_t n, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::uniform_real_distribution<float> u(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// A weight tensor owning its bytes: random but valid blocks (finite fp16 scales).
struct owned_tensor {
  std::vector<uint8_t> bytes;
  tensor_view view;
};

inline owned_tensor random_tensor(dtype t, int64_t n_rows, int64_t n_cols, std::mt19937& rng) {
  owned_tensor o;
  const size_t row_bytes = bytes_for(t, n_cols);
  o.bytes.resize(row_bytes * static_cast<size_t>(n_rows));
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : o.bytes) b = static_cast<uint8_t>(byte(rng));
  std::uniform_real_distribution<float> scale(0.002f, 0.05f);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  auto h = [](float f) { return fp32_to_fp16(f); };
  uint8_t* p = o.bytes.data();
  const int64_t n = n_rows * n_cols;
  switch (t) {
    case dtype::f32:
      for (int64_t i = 0; i < n; ++i) reinterpret_cast<float*>(p)[i] = value(rng);
      break;
    case dtype::f16:
      for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(p)[i] = h(value(rng));
      break;
    case dtype::bf16:
      for (int64_t i = 0; i < n; ++i) reinterpret_cast<uint16_t*>(p)[i] = fp32_to_bf16(value(rng));
      break;
    case dtype::q4_0:
      for (int64_t b = 0; b < n / 32; ++b) reinterpret_cast<block_q4_0*>(p)[b].d = h(scale(rng));
      break;
    case dtype::q4_1:
      for (int64_t b = 0; b < n / 32; ++b) {
        reinterpret_cast<block_q4_1*>(p)[b].d = h(scale(rng));
        reinterpret_cast<block_q4_1*>(p)[b].m = h(-8.0f * scale(rng));
      }
      break;
    case dtype::q8_0:
      for (int64_t b = 0; b < n / 32; ++b) reinterpret_cast<block_q8_0*>(p)[b].d = h(scale(rng) / 16);
      break;
    case dtype::q4_k:
      for (int64_t b = 0; b < n / 256; ++b) {
        reinterpret_cast<block_q4_k*>(p)[b].d = h(scale(rng) / 32);
        reinterpret_cast<block_q4_k*>(p)[b].dmin = h(scale(rng) / 16);
      }
      break;
    case dtype::q6_k:
      for (int64_t b = 0; b < n / 256; ++b) reinterpret_cast<block_q6_k*>(p)[b].d = h(scale(rng) / 64);
      break;
  }
  o.view.name = std::string("random_") + std::string(traits(t).name);
  o.view.type = t;
  o.view.shape = {n_rows, n_cols};
  o.view.data = o.bytes.data();
  o.view.n_bytes = o.bytes.size();
  return o;
}

// All rows of a tensor decoded by the formats library's dequantize_row, as double.
inline std::vector<double> reference_rows(const tensor_view& w) {
  const int64_t n_in = w.row_length();
  std::vector<float> row(static_cast<size_t>(n_in));
  std::vector<double> out(static_cast<size_t>(w.n_rows() * n_in));
  for (int64_t r = 0; r < w.n_rows(); ++r) {
    dequantize_row(w.type, w.row(r), row.data(), n_in);
    for (int64_t i = 0; i < n_in; ++i) out[static_cast<size_t>(r * n_in + i)] = row[i];
  }
  return out;
}

}  // namespace dspark::test

// GPU weight decoding (kernels/cuda/dequantize) against the CPU reference dequantize_row.
//
// Random raw blocks (random quant bytes, random finite fp16 scales) are decoded on both sides.
// The GPU rounds the float result once to bf16, so it must equal fp32_to_bf16(reference) up to
// one bf16 step where the CPU build contracted a multiply-add differently (tolerance:
// |gpu - ref| <= 2^-8 |ref| + 1e-30).
#include <gtest/gtest.h>

#include <cstring>

#include "kernels/cuda/dequantize.h"
#include "models/formats/quant_blocks.h"
#include "tests/cuda/cuda_test_util.h"

namespace dspark::cuda::test {
namespace {

// Random bytes for n_blocks blocks of `t`, with every fp16 scale field replaced by a random
// finite half in [-2, 2] (random bits there could be inf/NaN, which dequantize_row passes on).
std::vector<uint8_t> random_blocks(std::mt19937& rng, dtype t, int64_t n_elements) {
  const size_t bytes = bytes_for(t, n_elements);
  std::vector<uint8_t> raw(bytes);
  std::uniform_int_distribution<int> byte(0, 255);
  for (auto& b : raw) b = static_cast<uint8_t>(byte(rng));
  std::uniform_real_distribution<float> scale(-2.f, 2.f);
  auto put_half = [&](size_t off) {
    const uint16_t h = fp32_to_fp16(scale(rng));
    std::memcpy(raw.data() + off, &h, 2);
  };
  const dtype_traits& tr = traits(t);
  const int64_t n_blocks = n_elements / tr.block_size;
  for (int64_t b = 0; b < n_blocks; ++b) {
    const size_t base = static_cast<size_t>(b * tr.type_size);
    switch (t) {
      case dtype::q4_0: case dtype::q8_0: put_half(base); break;
      case dtype::q4_1: case dtype::q4_k: put_half(base); put_half(base + 2); break;
      case dtype::q6_k: put_half(base + offsetof(block_q6_k, d)); break;
      default: break;
    }
  }
  if (t == dtype::f32) {  // random finite floats
    for (int64_t i = 0; i < n_elements; ++i) {
      const float f = scale(rng) * 100.f;
      std::memcpy(raw.data() + 4 * i, &f, 4);
    }
  } else if (t == dtype::f16) {
    for (int64_t i = 0; i < n_elements; ++i) put_half(2 * i);
  } else if (t == dtype::bf16) {
    for (int64_t i = 0; i < n_elements; ++i) {
      const uint16_t h = fp32_to_bf16(scale(rng));
      std::memcpy(raw.data() + 2 * i, &h, 2);
    }
  }
  return raw;
}

class dequantize_test : public ::testing::TestWithParam<dtype> {};

TEST_P(dequantize_test, matches_cpu_reference) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  const dtype t = GetParam();
  std::mt19937 rng(1234 + static_cast<int>(t));
  const int64_t n = 256 * 37;  // several blocks of every type, not a power of two
  const auto raw = random_blocks(rng, t, n);

  std::vector<float> ref_f(n);
  dequantize_row(t, raw.data(), ref_f.data(), n);

  // Upload at an odd byte offset: the kernel must not assume any alignment of src.
  std::vector<uint8_t> shifted(raw.size() + 1);
  std::memcpy(shifted.data() + 1, raw.data(), raw.size());
  const device_buffer d_src = upload(shifted);
  device_buffer d_dst(n * sizeof(uint16_t));
  poison(d_dst);
  dequantize_to_bf16(t, d_src.as<uint8_t>() + 1, d_dst.as<__nv_bfloat16>(), n, nullptr);
  DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
  const auto out = download<uint16_t>(d_dst, n);

  int64_t bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double g = bf16_to_fp32(out[i]);
    const double r = bf16_to_fp32(fp32_to_bf16(ref_f[i]));
    if (!(std::abs(g - r) <= std::ldexp(std::abs(r), -8) + 1e-30)) {
      if (bad < 5) ADD_FAILURE() << traits(t).name << " element " << i << ": gpu " << g << " ref " << r;
      ++bad;
    }
  }
  EXPECT_EQ(bad, 0) << traits(t).name;
}

INSTANTIATE_TEST_SUITE_P(all_types, dequantize_test,
                         ::testing::Values(dtype::f32, dtype::f16, dtype::bf16, dtype::q4_0,
                                           dtype::q4_1, dtype::q8_0, dtype::q4_k, dtype::q6_k),
                         [](const auto& info) { return std::string(traits(info.param).name); });

TEST(dequantize, rejects_partial_blocks) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  EXPECT_THROW(dequantize_to_bf16(dtype::q4_k, nullptr, nullptr, 100, nullptr), std::invalid_argument);
}

}  // namespace
}  // namespace dspark::cuda::test

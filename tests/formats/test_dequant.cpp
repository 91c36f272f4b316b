// Dequantization against known answers from gguf-py (scripts/make_dequant_vectors.py writes
// tests/formats/data/dequant_vectors.json), plus the dtype trait table and hand-made blocks.
//
// Comparison is bit-exact, with one documented exception: for q4_1 (d*q + m) and q4_k
// (d*sc*q - dmin*m) the compiler may fuse the multiply-add into an FMA (GCC contracts by default
// in gnu++ mode with -mfma), which rounds once instead of twice. There the allowed difference is
// the FMA rounding bound 2 * FLT_EPSILON * (|product| + |offset|), computed from the block's own
// scale fields.
#include <cfloat>
#include <cmath>
#include <cstdio>
#include <set>

#include "common/error.h"
#include "models/formats/dtype.h"
#include "models/formats/fp16.h"
#include "models/formats/quant_blocks.h"
#include "tests/formats/format_test_util.h"

namespace dspark {
namespace {

using test::float_bits;

// Largest |product| + |offset| of any element in block `b` of a fused-multiply-add type.
double fma_term_bound(dtype t, const uint8_t* raw, int64_t b) {
  if (t == dtype::q4_1) {
    block_q4_1 blk;
    std::memcpy(&blk, raw + b * sizeof blk, sizeof blk);
    return 15.0 * std::fabs(fp16_to_fp32(blk.d)) + std::fabs(fp16_to_fp32(blk.m));
  }
  block_q4_k blk;
  std::memcpy(&blk, raw + b * sizeof blk, sizeof blk);
  return 63.0 * 15.0 * std::fabs(fp16_to_fp32(blk.d)) + 63.0 * std::fabs(fp16_to_fp32(blk.dmin));
}

TEST(Dequant, MatchesGgufPyVectorsForEveryType) {
  const auto fixture = test::read_json(test::data_path("formats/data/dequant_vectors.json"));
  std::set<std::string> seen;
  for (const auto& c : fixture["cases"]) {
    const std::string name = c["type"];
    SCOPED_TRACE(name);
    const auto tr = dtype_traits_of(c["ggml_type"].get<uint32_t>());
    ASSERT_TRUE(tr.has_value());
    EXPECT_EQ(tr->name, name);
    const dtype t = static_cast<dtype>(c["ggml_type"].get<uint32_t>());
    const std::vector<uint8_t> raw = test::from_hex(c["raw"]);
    const std::vector<float> want = test::floats_from_hex(c["expected_f32"]);
    const int64_t n = c["n"];
    ASSERT_EQ(static_cast<int64_t>(want.size()), n);
    ASSERT_EQ(bytes_for(t, n), raw.size());
    std::vector<float> got(static_cast<size_t>(n) + 1, 12345.0f);  // one sentinel past the end
    dequantize_row(t, raw.data(), got.data(), n);
    EXPECT_EQ(got[static_cast<size_t>(n)], 12345.0f) << "wrote past the end";
    const bool fused = t == dtype::q4_1 || t == dtype::q4_k;
    int64_t n_exact = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float g = got[static_cast<size_t>(i)], w = want[static_cast<size_t>(i)];
      if (float_bits(g) == float_bits(w) || (std::isnan(g) && std::isnan(w))) {
        ++n_exact;
        continue;
      }
      ASSERT_TRUE(fused) << "element " << i << ": got " << g << " want " << w;
      const double bound = 2.0 * FLT_EPSILON * fma_term_bound(t, raw.data(), i / tr->block_size);
      ASSERT_LE(std::fabs(static_cast<double>(g) - w), bound) << "element " << i;
    }
    if (!fused) {
      EXPECT_EQ(n_exact, n);
    }
    std::printf("%s: %lld of %lld bit-exact\n", name.c_str(), static_cast<long long>(n_exact),
                static_cast<long long>(n));
    seen.insert(name);
  }
  EXPECT_EQ(seen, (std::set<std::string>{"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q4_k",
                                         "q6_k"}));
}

TEST(Dequant, HandMadeQ8_0AndQ4_0Blocks) {
  // q8_0: d = 0.5 (fp16 0x3800), q = i - 16  ->  x = (i - 16) / 2
  block_q8_0 b8{};
  b8.d = 0x3800;
  for (int i = 0; i < QK8_0; ++i) b8.qs[i] = static_cast<int8_t>(i - 16);
  float out[QK8_0];
  dequantize_row(dtype::q8_0, &b8, out, QK8_0);
  for (int i = 0; i < QK8_0; ++i) EXPECT_EQ(out[i], (i - 16) * 0.5f) << i;

  // q4_0: d = 2 (0x4000); byte j holds element j (low nibble) and j + 16 (high nibble).
  block_q4_0 b4{};
  b4.d = 0x4000;
  for (int j = 0; j < 16; ++j) b4.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  dequantize_row(dtype::q4_0, &b4, out, QK4_0);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(out[j], 2.0f * (j - 8)) << j;
    EXPECT_EQ(out[j + 16], 2.0f * (15 - j - 8)) << j;
  }
}

TEST(Dequant, HandMadeQ4_KScalesAndMins) {
  // Sub-block j gets scale j + 1 and min 2j (6-bit packing of quant_blocks.h), d = 1, dmin = 0.5,
  // every nibble 3: x = (j + 1) * 3 - 0.5 * 2j = 2j + 3.
  block_q4_k b{};
  b.d = 0x3c00;     // 1.0
  b.dmin = 0x3800;  // 0.5
  for (int j = 0; j < 8; ++j) {
    const int sc = j + 1, mn = 2 * j;
    if (j < 4) {
      b.scales[j] = static_cast<uint8_t>(sc);
      b.scales[j + 4] = static_cast<uint8_t>(mn);
    } else {
      b.scales[j + 4] = static_cast<uint8_t>((sc & 15) | ((mn & 15) << 4));
      b.scales[j - 4] |= static_cast<uint8_t>((sc >> 4) << 6);
      b.scales[j] |= static_cast<uint8_t>((mn >> 4) << 6);
    }
  }
  std::memset(b.qs, 0x33, sizeof b.qs);
  std::vector<float> out(QK_K);
  dequantize_row(dtype::q4_k, &b, out.data(), QK_K);
  for (int i = 0; i < QK_K; ++i) EXPECT_EQ(out[i], static_cast<float>(2 * (i / 32) + 3)) << i;
}

TEST(Dequant, TraitsAndSizes) {
  EXPECT_EQ(traits(dtype::q4_k).block_size, 256);
  EXPECT_EQ(traits(dtype::q4_k).type_size, 144);
  EXPECT_EQ(traits(dtype::q6_k).type_size, 210);
  EXPECT_EQ(traits(dtype::bf16).name, "bf16");
  EXPECT_EQ(bytes_for(dtype::f32, 7), 28u);
  EXPECT_EQ(bytes_for(dtype::f16, 3), 6u);
  EXPECT_EQ(bytes_for(dtype::q4_1, 64), 40u);
  EXPECT_EQ(bytes_for(dtype::q8_0, 0), 0u);
  EXPECT_EQ(bytes_for(dtype::q6_k, 512), 420u);
  EXPECT_FALSE(dtype_traits_of(6).has_value());   // q5_0: a ggml type we do not support
  EXPECT_FALSE(dtype_traits_of(99).has_value());
  EXPECT_THROW(traits(static_cast<dtype>(99)), format_error);
  EXPECT_THROW(bytes_for(dtype::q4_k, 100), format_error);
  EXPECT_THROW(bytes_for(dtype::q8_0, -32), format_error);
  EXPECT_THROW(bytes_for(dtype::f32, INT64_MAX), format_error);  // byte count overflows
  float out[32];
  uint8_t zeros[64] = {};
  EXPECT_THROW(dequantize_row(dtype::q4_0, zeros, out, 31), format_error);
}

}  // namespace
}  // namespace dspark

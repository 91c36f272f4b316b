// Embedding gather, fused residual + RMSNorm, SiLU*up, row argmax and row gather against plain
// double-precision CPU references written here.
//
// Tolerances: outputs rounded to bf16 once may differ from the exact value by half a bf16 step
// (2^-9 relative) plus float32 accumulation error, so bf16 outputs use |err| <= 1e-3 + 8e-3|ref|.
// Float outputs that involve no rounding to bf16 (embedding -> f32, gather -> f32) are exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "kernels/cuda/argmax.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/gather_rows.h"
#include "kernels/cuda/rms_norm.h"
#include "kernels/cuda/silu_mul.h"
#include "tests/cuda/cuda_test_util.h"

namespace dspark::cuda::test {
namespace {

using bf = __nv_bfloat16;
constexpr double k_atol = 1e-3, k_rtol = 8e-3;

TEST(cuda_embedding, gathers_rows_to_f32_and_bf16) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(1);
  const int64_t vocab = 1000, d = 200, n = 37;
  const auto table = random_bf16(rng, vocab * d);
  std::vector<int32_t> ids(n);
  std::uniform_int_distribution<int32_t> pick(0, vocab - 1);
  for (auto& i : ids) i = pick(rng);
  ids[5] = vocab;  // out of range: the kernel must produce NaN, not read out of bounds
  ids[6] = -1;
  const auto d_table = upload(table.bits);
  const auto d_ids = upload(ids);
  device_buffer d_f32(n * d * 4), d_bf(n * d * 2);
  poison(d_f32);
  poison(d_bf);
  embedding_gather(d_table.as<bf>(), vocab, d, d_ids.as<int32_t>(), n, d_f32.as<float>(), nullptr);
  embedding_gather(d_table.as<bf>(), vocab, d, d_ids.as<int32_t>(), n, d_bf.as<bf>(), nullptr);
  DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
  const auto f = download<float>(d_f32, n * d);
  const auto b = download<uint16_t>(d_bf, n * d);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t i = 0; i < d; ++i) {
      if (t == 5 || t == 6) {
        ASSERT_TRUE(std::isnan(f[t * d + i])) << "bad id must give NaN";
        continue;
      }
      const double ref = table.values[ids[t] * d + i];
      ASSERT_EQ(f[t * d + i], ref) << "t=" << t << " i=" << i;
      ASSERT_EQ(b[t * d + i], table.bits[ids[t] * d + i]);
    }
  }
}

TEST(cuda_rms_norm, residual_add_then_norm) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(2);
  const int64_t n = 19, d = 4096 + 64;  // not a multiple of the block's 2048-element stride
  const float eps = 1e-5f;
  for (bool with_delta : {true, false}) {
    const auto resid = random_floats(rng, n * d, -3.f, 3.f);
    const auto delta = random_bf16(rng, n * d, -2.f, 2.f);
    const auto weight = random_floats(rng, d, 0.5f, 1.5f);
    std::vector<double> ref_res(n * d), ref_out(n * d);
    for (int64_t t = 0; t < n; ++t) {
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) {
        const double x = static_cast<double>(resid[t * d + i]) + (with_delta ? delta.values[t * d + i] : 0.0);
        ref_res[t * d + i] = x;
        ss += x * x;
      }
      const double inv = 1.0 / std::sqrt(ss / d + eps);
      for (int64_t i = 0; i < d; ++i) ref_out[t * d + i] = ref_res[t * d + i] * inv * weight[i];
    }
    auto d_res = upload(resid);
    const auto d_delta = upload(delta.bits);
    const auto d_w = upload(weight);
    device_buffer d_out(n * d * 2);
    poison(d_out);
    rms_norm_residual(d_res.as<float>(), with_delta ? d_delta.as<bf>() : nullptr, d_w.as<float>(), eps,
                      d_out.as<bf>(), n, d, nullptr);
    DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
    const auto res = download<float>(d_res, n * d);
    const auto out = bf16_to_double(download<uint16_t>(d_out, n * d));
    EXPECT_LE(max_scaled_err(res, ref_res, 1e-6, 1e-6), 1.0) << "residual, delta=" << with_delta;
    EXPECT_LE(max_scaled_err(out, ref_out, k_atol, k_rtol), 1.0) << "out, delta=" << with_delta;
  }
}

TEST(cuda_silu_mul, matches_reference_with_strided_input) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(3);
  const int64_t n = 9, ff = 1000;  // 1000 % 8 == 0
  const auto gu = random_bf16(rng, n * 2 * ff, -6.f, 6.f);  // fused [gate | up] rows
  std::vector<double> ref(n * ff);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < ff; ++i) {
      const double g = gu.values[t * 2 * ff + i], u = gu.values[t * 2 * ff + ff + i];
      ref[t * ff + i] = g / (1.0 + std::exp(-g)) * u;
    }
  const auto d_gu = upload(gu.bits);
  device_buffer d_out(n * ff * 2);
  poison(d_out);
  silu_mul(d_gu.as<bf>(), d_gu.as<bf>() + ff, 2 * ff, d_out.as<bf>(), n, ff, nullptr);
  DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
  const auto out = bf16_to_double(download<uint16_t>(d_out, n * ff));
  EXPECT_LE(max_scaled_err(out, ref, k_atol, k_rtol), 1.0);
}

TEST(cuda_argmax, lowest_index_wins_ties) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(4);
  const int64_t rows = 12, cols = 151936, stride = cols + 16;
  auto logits = random_floats(rng, rows * stride, -10.f, 10.f);
  // Row 0: a tie between two far-apart positions; row 1: ties everywhere (all equal);
  // row 2: max at the last column; row 3: NaNs sprinkled in, which are ignored.
  logits[0 * stride + 100000] = 50.f;
  logits[0 * stride + 7] = 50.f;
  for (int64_t j = 0; j < cols; ++j) logits[1 * stride + j] = 1.f;
  logits[2 * stride + cols - 1] = 99.f;
  for (int64_t j = 0; j < cols; j += 97) logits[3 * stride + j] = std::nanf("");
  const auto d_l = upload(logits);
  device_buffer d_out(rows * 4);
  poison(d_out);
  argmax_rows(d_l.as<float>(), rows, cols, stride, d_out.as<int32_t>(), nullptr);
  DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
  const auto out = download<int32_t>(d_out, rows);
  for (int64_t r = 0; r < rows; ++r) {
    int32_t best = -1;
    for (int64_t j = 0; j < cols; ++j) {
      const float v = logits[r * stride + j];
      if (std::isnan(v)) continue;
      if (best < 0 || v > logits[r * stride + best]) best = static_cast<int32_t>(j);
    }
    EXPECT_EQ(out[r], best) << "row " << r;
  }
  EXPECT_EQ(out[0], 7);
  EXPECT_EQ(out[1], 0);
}

TEST(cuda_gather_rows, selects_and_widens) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  std::mt19937 rng(5);
  const int64_t src_rows = 30, cols = 777, stride = 800;
  const auto src = random_bf16(rng, src_rows * stride);
  const std::vector<int32_t> rows = {29, 0, 5, 5, 17};
  const auto d_src = upload(src.bits);
  const auto d_rows = upload(rows);
  device_buffer d_f(rows.size() * cols * 4), d_b(rows.size() * cols * 2);
  poison(d_f);
  poison(d_b);
  gather_rows(d_src.as<bf>(), stride, d_rows.as<int32_t>(), rows.size(), cols, d_f.as<float>(), nullptr);
  gather_rows(d_src.as<bf>(), stride, d_rows.as<int32_t>(), rows.size(), cols, d_b.as<bf>(), nullptr);
  DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
  const auto f = download<float>(d_f, rows.size() * cols);
  const auto b = download<uint16_t>(d_b, rows.size() * cols);
  for (size_t r = 0; r < rows.size(); ++r)
    for (int64_t j = 0; j < cols; ++j) {
      ASSERT_EQ(f[r * cols + j], src.values[rows[r] * stride + j]);
      ASSERT_EQ(b[r * cols + j], src.bits[rows[r] * stride + j]);
    }
}

}  // namespace
}  // namespace dspark::cuda::test

// matmul and embedding_row for every dtype, both precision modes, 1-3 threads, against a
// double-precision reference built from dequantize_row (models/formats/dtype.cpp).
//
// Tolerances, per output y[t, o] with reference r = sum_i w_i x_i (double):
//   f32_activations: |y - r| <= 2e-5 * sum_i |w_i x_i| + 1e-6   (float accumulation)
//   q8_activations:  |y - r| <= sum_i |w_i| * amax(x's block of i) / 254 * 1.001
//                               + 2e-5 * sum_i |w_i x_i| + 1e-6
//     (rounding x to the int8 grid of step amax/127 moves each x_i by at most half a step),
//   and over a whole case, ||y - r|| / ||r|| < 1e-2 in q8 mode.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/matmul.h"
#include "tests/engine/test_kernels_util.h"

namespace dspark {
namespace {

using test::aligned_buffer;
using test::poison;
using test::random_floats;
using test::random_tensor;

struct mm_case {
  dtype type;
  int64_t n_in;
};

class KernelsMatmul : public ::testing::TestWithParam<mm_case> {};

// Runs every (n_out, n_tokens, precision, threads) combination for one dtype. n_tokens 100
// crosses the int8 kernel's 64-token chunk boundary.
TEST_P(KernelsMatmul, MatchesDoubleReference) {
  const mm_case c = GetParam();
  std::mt19937 rng(1234 + static_cast<int>(c.type));
  thread_pool pools[3] = {thread_pool(1), thread_pool(2), thread_pool(3)};
  for (int64_t n_out : {7, 576, 1536}) {
    auto w = random_tensor(c.type, n_out, c.n_in, rng);
    const std::vector<double> wd = test::reference_rows(w.view);
    for (int64_t n_tokens : {1, 3, 17, 64, 100}) {
      if (n_tokens == 100 && n_out != 576) continue;
      const std::vector<float> x = random_floats(rng, static_cast<size_t>(n_tokens * c.n_in));
      // Reference, the |w||x| magnitude, and the int8-rounding bound per output.
      std::vector<double> ref(n_tokens * n_out), mag(n_tokens * n_out), qbound(n_tokens * n_out);
      for (int64_t t = 0; t < n_tokens; ++t) {
        const float* xt = x.data() + t * c.n_in;
        std::vector<double> half_step(c.n_in);
        for (int64_t b = 0; b < c.n_in; b += 32) {
          double amax = 0;
          for (int64_t i = b; i < b + 32; ++i) amax = std::max(amax, std::fabs((double)xt[i]));
          for (int64_t i = b; i < b + 32; ++i) half_step[i] = amax / 254.0;
        }
        for (int64_t o = 0; o < n_out; ++o) {
          const double* wr = wd.data() + o * c.n_in;
          double s = 0, m = 0, q = 0;
          for (int64_t i = 0; i < c.n_in; ++i) {
            s += wr[i] * xt[i];
            m += std::fabs(wr[i] * xt[i]);
            q += std::fabs(wr[i]) * half_step[i];
          }
          ref[t * n_out + o] = s;
          mag[t * n_out + o] = m;
          qbound[t * n_out + o] = q;
        }
      }
      auto ws = aligned_buffer(matmul_workspace_size(w.view, n_tokens));
      std::vector<float> y(n_tokens * n_out);
      for (matmul_precision prec : {matmul_precision::f32_activations,
                                    matmul_precision::q8_activations}) {
        const bool q8 = prec == matmul_precision::q8_activations &&
                        c.type != dtype::f32 && c.type != dtype::f16 && c.type != dtype::bf16;
        for (auto& pool : pools) {
          poison(y);
          matmul(w.view, x.data(), n_tokens, y.data(), ws.get(), pool, prec);
          double err2 = 0, ref2 = 0;
          int bad = 0;
          for (int64_t k = 0; k < n_tokens * n_out; ++k) {
            const double tol = 2e-5 * mag[k] + 1e-6 + (q8 ? qbound[k] * 1.001 : 0.0);
            const double e = std::fabs(y[k] - ref[k]);
            if (!(e <= tol) && bad++ < 3) {
              ADD_FAILURE() << traits(c.type).name << " n_out=" << n_out << " n_tokens="
                            << n_tokens << " threads=" << pool.n_threads() << " q8=" << q8
                            << " at t=" << k / n_out << " o=" << k % n_out << ": got " << y[k]
                            << " want " << ref[k] << " tol " << tol;
            }
            err2 += (y[k] - ref[k]) * (y[k] - ref[k]);
            ref2 += ref[k] * ref[k];
          }
          EXPECT_EQ(bad, 0);
          const double rel = std::sqrt(err2 / ref2);
          EXPECT_LT(rel, q8 ? 1e-2 : 1e-5) << traits(c.type).name << " n_out=" << n_out
                                           << " n_tokens=" << n_tokens;
          // The int8 path must really run (its rounding leaves a visible error).
          if (q8) {
            EXPECT_GT(rel, 1e-6) << traits(c.type).name << " q8 path looks unused";
          }
          if (n_out == 1536 && n_tokens == 17 && pool.n_threads() == 2) {
            std::printf("  %-5s n_in=%-5lld %s: rms rel error %.2e\n",
                        std::string(traits(c.type).name).c_str(), (long long)c.n_in,
                        prec == matmul_precision::q8_activations ? "q8 " : "f32", rel);
          }
        }
      }
    }
  }
}

// Instantiated as "Kernels/...", so --gtest_filter='Kernels*' runs the parameterized suites too.
INSTANTIATE_TEST_SUITE_P(
    Kernels, KernelsMatmul,
    ::testing::Values(mm_case{dtype::f32, 576}, mm_case{dtype::f16, 576},
                      mm_case{dtype::bf16, 576}, mm_case{dtype::q8_0, 576},
                      mm_case{dtype::q4_0, 576}, mm_case{dtype::q4_1, 576},
                      mm_case{dtype::q4_1, 1536}, mm_case{dtype::q4_k, 512},
                      mm_case{dtype::q6_k, 768}),
    [](const ::testing::TestParamInfo<mm_case>& i) {
      return std::string(traits(i.param.type).name) + "_" + std::to_string(i.param.n_in);
    });

// Batch invariance, the precondition of lossless speculative decoding: a token's output row
// must be bitwise the same whether it is computed alone (n_tokens = 1, the decode kernel) or
// as any row of a multi-token product (the verify forward), for any batch size, any position
// in the batch and any thread count. Checked with memcmp against the single-token result,
// for every dtype in both precision modes.
class KernelsMatmulBatchInvariance : public ::testing::TestWithParam<mm_case> {};

TEST_P(KernelsMatmulBatchInvariance, RowsBitwiseEqualToSingleToken) {
  const mm_case c = GetParam();
  std::mt19937 rng(4321 + static_cast<int>(c.type) + static_cast<int>(c.n_in));
  thread_pool pools[3] = {thread_pool(1), thread_pool(2), thread_pool(3)};
  // 101 rows: not a multiple of the 4-row tiles nor of the 16-row thread grain.
  const int64_t n_out = 101, n_in = c.n_in, n_pool = 64;
  auto w = random_tensor(c.type, n_out, n_in, rng);
  // Token rows of varied scale, some with an outlier, so block scales and sums vary widely.
  std::vector<float> tokens = random_floats(rng, static_cast<size_t>(n_pool * n_in));
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  for (int64_t t = 0; t < n_pool; ++t) {
    const float s = std::pow(10.0f, 4.0f * u(rng) - 2.0f);
    for (int64_t i = 0; i < n_in; ++i) tokens[t * n_in + i] *= s;
    if (t % 3 == 0) tokens[t * n_in + (t * 7) % n_in] *= 50.0f;
  }
  for (matmul_precision prec : {matmul_precision::q8_activations,
                                matmul_precision::f32_activations}) {
    const char* mode = prec == matmul_precision::q8_activations ? "q8" : "f32";
    // Each token alone, one thread: the decode result every other computation must equal.
    std::vector<float> alone(n_pool * n_out);
    {
      auto ws = aligned_buffer(matmul_workspace_size(w.view, 1));
      for (int64_t t = 0; t < n_pool; ++t)
        matmul(w.view, tokens.data() + t * n_in, 1, alone.data() + t * n_out, ws.get(), pools[0], prec);
    }
    int64_t checked = 0, mismatched = 0;
    for (int64_t n_tokens : {1, 2, 3, 5, 8, 17, 64}) {
      auto ws = aligned_buffer(matmul_workspace_size(w.view, n_tokens));
      std::vector<float> x(n_tokens * n_in), y(n_tokens * n_out);
      // Batch i holds tokens (start + i) % n_pool, so each token lands at several positions.
      for (int64_t start : {int64_t{0}, int64_t{7}, int64_t{30}, int64_t{63}}) {
        for (int64_t i = 0; i < n_tokens; ++i)
          std::memcpy(x.data() + i * n_in, tokens.data() + ((start + i) % n_pool) * n_in,
                      static_cast<size_t>(n_in) * sizeof(float));
        for (auto& pool : pools) {
          poison(y);
          matmul(w.view, x.data(), n_tokens, y.data(), ws.get(), pool, prec);
          for (int64_t i = 0; i < n_tokens; ++i) {
            const int64_t t = (start + i) % n_pool;
            ++checked;
            if (std::memcmp(y.data() + i * n_out, alone.data() + t * n_out,
                            static_cast<size_t>(n_out) * sizeof(float)) != 0 &&
                mismatched++ < 5) {
              int64_t o = 0;
              while (std::memcmp(&y[i * n_out + o], &alone[t * n_out + o], sizeof(float)) == 0) ++o;
              ADD_FAILURE() << traits(c.type).name << " " << mode << " n_tokens=" << n_tokens
                            << " position=" << i << " threads=" << pool.n_threads() << " row " << o
                            << ": batched " << y[i * n_out + o] << " alone " << alone[t * n_out + o];
            }
          }
        }
      }
    }
    EXPECT_EQ(mismatched, 0) << traits(c.type).name << " " << mode << ": " << mismatched << " of "
                             << checked << " token rows differ from the single-token result";
  }
}

INSTANTIATE_TEST_SUITE_P(
    Kernels, KernelsMatmulBatchInvariance,
    ::testing::Values(mm_case{dtype::f32, 576}, mm_case{dtype::f32, 100}, mm_case{dtype::f16, 576},
                      mm_case{dtype::bf16, 576}, mm_case{dtype::q8_0, 576},
                      mm_case{dtype::q4_0, 576}, mm_case{dtype::q4_1, 576},
                      mm_case{dtype::q4_1, 1536}, mm_case{dtype::q4_k, 512},
                      mm_case{dtype::q6_k, 768}),
    [](const ::testing::TestParamInfo<mm_case>& i) {
      return std::string(traits(i.param.type).name) + "_" + std::to_string(i.param.n_in);
    });

// Float weights of odd length exercise the non-multiple-of-8 tail.
TEST(KernelsMatmulTail, OddRowLengthF32) {
  std::mt19937 rng(7);
  thread_pool pool(2);
  for (int64_t n_in : {1, 5, 13, 33}) {
    auto w = random_tensor(dtype::f32, 9, n_in, rng);
    const auto wd = test::reference_rows(w.view);
    const auto x = random_floats(rng, 3 * n_in);
    auto ws = aligned_buffer(matmul_workspace_size(w.view, 3));
    std::vector<float> y(3 * 9);
    poison(y);
    matmul(w.view, x.data(), 3, y.data(), ws.get(), pool);
    for (int t = 0; t < 3; ++t)
      for (int o = 0; o < 9; ++o) {
        double s = 0;
        for (int64_t i = 0; i < n_in; ++i) s += wd[o * n_in + i] * x[t * n_in + i];
        EXPECT_NEAR(y[t * 9 + o], s, 1e-5) << "n_in=" << n_in;
      }
  }
}

// A grouped product (q/k/v, gate/up in one dispatch) must give each weight bitwise the rows
// of its own matmul() call: row counts that are not multiples of the 16-row grain put two
// weights' rows next to each other in one chunk, and a group whose dtypes take different
// kernel paths (f32 weights have no int8 kernel) falls back to one call per weight.
TEST(KernelsMatmulGroup, EachOutputBitwiseEqualsItsOwnMatmul) {
  std::mt19937 rng(99);
  const int64_t n_in = 256;
  const std::vector<std::vector<std::pair<dtype, int64_t>>> groups = {
      {{dtype::q4_1, 101}, {dtype::q4_1, 7}, {dtype::q4_1, 40}},
      {{dtype::q8_0, 64}, {dtype::q4_k, 33}},
      {{dtype::q4_1, 50}, {dtype::q6_k, 17}, {dtype::f32, 20}, {dtype::q4_0, 16}},
      {{dtype::bf16, 30}, {dtype::f16, 3}},
  };
  for (const auto& spec : groups) {
    std::vector<test::owned_tensor> ws_;
    for (const auto& [t, rows] : spec) ws_.push_back(random_tensor(t, rows, n_in, rng));
    for (int64_t n_tokens : {1, 3, 9}) {
      const auto x = random_floats(rng, static_cast<size_t>(n_tokens * n_in));
      auto ws = aligned_buffer(matmul_workspace_size(ws_[0].view, n_tokens));
      for (matmul_precision prec : {matmul_precision::q8_activations, matmul_precision::f32_activations}) {
        for (int threads : {1, 2, 3}) {
          thread_pool pool(threads);
          std::vector<std::vector<float>> want(spec.size()), got(spec.size());
          std::vector<matmul_output> outs;
          for (size_t i = 0; i < spec.size(); ++i) {
            const int64_t n_out = ws_[i].view.n_rows();
            want[i].resize(n_tokens * n_out);
            got[i].resize(n_tokens * n_out);
            poison(got[i]);
            matmul(ws_[i].view, x.data(), n_tokens, want[i].data(), ws.get(), pool, prec);
            outs.push_back({&ws_[i].view, got[i].data()});
          }
          matmul_group(outs.data(), static_cast<int>(outs.size()), x.data(), n_tokens, ws.get(), pool, prec);
          for (size_t i = 0; i < spec.size(); ++i)
            EXPECT_EQ(std::memcmp(got[i].data(), want[i].data(), got[i].size() * sizeof(float)), 0)
                << "weight " << i << " (" << traits(spec[i].first).name << ") n_tokens=" << n_tokens
                << " threads=" << threads << (prec == matmul_precision::q8_activations ? " q8" : " f32");
        }
      }
    }
  }
}

TEST(KernelsMatmulGroup, RejectsMismatchedRowLengthsAndGroupSize) {
  std::mt19937 rng(5);
  thread_pool pool(1);
  auto a = random_tensor(dtype::q4_1, 16, 256, rng), b = random_tensor(dtype::q4_1, 16, 512, rng);
  const auto x = random_floats(rng, 512);
  auto ws = aligned_buffer(matmul_workspace_size(b.view, 1));
  std::vector<float> ya(16), yb(16);
  const matmul_output mixed[] = {{&a.view, ya.data()}, {&b.view, yb.data()}};
  EXPECT_THROW(matmul_group(mixed, 2, x.data(), 1, ws.get(), pool, matmul_precision::q8_activations),
               invalid_argument_error);
  matmul_output same[kMatmulGroupMax + 1];
  for (matmul_output& o : same) o = {&a.view, ya.data()};
  EXPECT_THROW(matmul_group(same, 0, x.data(), 1, ws.get(), pool, matmul_precision::q8_activations),
               invalid_argument_error);
  EXPECT_THROW(matmul_group(same, kMatmulGroupMax + 1, x.data(), 1, ws.get(), pool,
                            matmul_precision::q8_activations),
               invalid_argument_error);
}

TEST(KernelsMatmulPrecision, GlobalSwitchRoundTrips) {
  const matmul_precision old = get_matmul_precision();
  set_matmul_precision(matmul_precision::f32_activations);
  EXPECT_EQ(get_matmul_precision(), matmul_precision::f32_activations);
  set_matmul_precision(matmul_precision::q8_activations);
  EXPECT_EQ(get_matmul_precision(), matmul_precision::q8_activations);
  set_matmul_precision(old);
}

TEST(KernelsEmbedding, EveryDtypeMatchesDequantizeRow) {
  std::mt19937 rng(99);
  for (dtype t : {dtype::f32, dtype::f16, dtype::bf16, dtype::q8_0, dtype::q4_0, dtype::q4_1,
                  dtype::q4_k, dtype::q6_k}) {
    auto table = random_tensor(t, 5, 512, rng);
    const auto ref = test::reference_rows(table.view);
    std::vector<float> row(512);
    for (int64_t r = 0; r < 5; ++r) {
      poison(row);
      embedding_row(table.view, r, row.data());
      for (int64_t i = 0; i < 512; ++i) {
        const double want = ref[r * 512 + i];
        ASSERT_NEAR(row[i], want, 1e-6 * std::max(1.0, std::fabs(want)))
            << traits(t).name << " row " << r << " col " << i;
      }
    }
  }
  auto table = random_tensor(dtype::f32, 2, 8, rng);
  std::vector<float> row(8);
  EXPECT_THROW(embedding_row(table.view, 2, row.data()), std::exception);
  EXPECT_THROW(embedding_row(table.view, -1, row.data()), std::exception);
}

}  // namespace
}  // namespace dspark

// cuBLASLt GEMM and the hand GEMV against a double-precision reference y = x W^T.
//
// Inputs are exact bf16 values, so the only errors are float32 accumulation (~1e-6 relative)
// and, for bf16 outputs, one rounding (2^-9 relative). Tolerances: bf16 out: relative L2 error
// <= 4e-3 and every element within 1e-2 * rms(ref) + 8e-3 |ref|; f32 out: relative L2 <= 1e-5.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemv.h"
#include "tests/cuda/cuda_test_util.h"

namespace dspark::cuda::test {
namespace {

using bf = __nv_bfloat16;

struct problem {
  int64_t n_tok, n_out, n_in;
  bf16_data w, x;
  std::vector<double> ref;
  double rms = 0;
};

problem make_problem(int64_t n_tok, int64_t n_out, int64_t n_in, uint32_t seed) {
  std::mt19937 rng(seed);
  problem p{n_tok, n_out, n_in, random_bf16(rng, n_out * n_in), random_bf16(rng, n_tok * n_in), {}, 0};
  p.ref.assign(n_tok * n_out, 0.0);
  double ss = 0;
  for (int64_t t = 0; t < n_tok; ++t)
    for (int64_t o = 0; o < n_out; ++o) {
      double s = 0;
      for (int64_t i = 0; i < n_in; ++i) s += p.x.values[t * n_in + i] * p.w.values[o * n_in + i];
      p.ref[t * n_out + o] = s;
      ss += s * s;
    }
  p.rms = std::sqrt(ss / static_cast<double>(p.ref.size()));
  return p;
}

void check_bf16(const problem& p, const std::vector<uint16_t>& out, const char* what) {
  const auto o = bf16_to_double(out);
  EXPECT_LE(rel_l2(o, p.ref), 4e-3) << what;
  EXPECT_LE(max_scaled_err(o, p.ref, 1e-2 * p.rms, 8e-3), 1.0) << what;
}

TEST(cuda_gemm, cublaslt_bf16_and_f32_outputs) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  gemm_context ctx;
  for (auto [n_tok, n_out, n_in] : {std::tuple<int64_t, int64_t, int64_t>{1, 384, 512},
                                    {7, 1000, 256}, {64, 520, 1024}, {129, 256, 2048}}) {
    const problem p = make_problem(n_tok, n_out, n_in, static_cast<uint32_t>(n_tok * 31 + n_out));
    const auto dw = upload(p.w.bits), dx = upload(p.x.bits);
    device_buffer yb(n_tok * n_out * 2), yf(n_tok * n_out * 4);
    poison(yb);
    ctx.gemm(dw.as<bf>(), dx.as<bf>(), n_tok, n_out, n_in, yb.as<bf>(), nullptr);
    // beta = 1 accumulates onto an existing y: start from a known c and check y - c = ref.
    std::vector<float> c(n_tok * n_out);
    for (size_t i = 0; i < c.size(); ++i) c[i] = static_cast<float>(i % 13) - 6.f;
    DSPARK_CUDA_CHECK(cudaMemcpy(yf.data(), c.data(), c.size() * 4, cudaMemcpyHostToDevice));
    ctx.gemm(dw.as<bf>(), dx.as<bf>(), n_tok, n_out, n_in, yf.as<float>(), 1.f, nullptr);
    DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
    check_bf16(p, download<uint16_t>(yb, n_tok * n_out), "cublaslt bf16");
    auto f = download<float>(yf, n_tok * n_out);
    std::vector<double> fd(f.size());
    for (size_t i = 0; i < f.size(); ++i) fd[i] = static_cast<double>(f[i]) - c[i];
    EXPECT_LE(rel_l2(fd, p.ref), 1e-5) << "cublaslt f32 beta=1, n_tok=" << n_tok;
  }
}

using gemm_shape = std::tuple<int64_t, int64_t, int64_t>;  // n_tokens, n_out, n_in

// Calls ctx twice per shape (bf16 and float32 outputs, beta 0) and checks both against the
// reference each time; after_call(rep) runs after each pair of calls.
void expect_products_match(gemm_context& ctx, std::initializer_list<gemm_shape> shapes, const char* what,
                           const std::function<void(int)>& after_call = {}) {
  for (auto [n_tok, n_out, n_in] : shapes) {
    const problem p = make_problem(n_tok, n_out, n_in, static_cast<uint32_t>(n_tok * 17 + n_out));
    const auto dw = upload(p.w.bits), dx = upload(p.x.bits);
    device_buffer yb(n_tok * n_out * 2), yf(n_tok * n_out * 4);
    for (int rep = 0; rep < 2; ++rep) {
      poison(yb);
      poison(yf);
      ctx.gemm(dw.as<bf>(), dx.as<bf>(), n_tok, n_out, n_in, yb.as<bf>(), nullptr);
      ctx.gemm(dw.as<bf>(), dx.as<bf>(), n_tok, n_out, n_in, yf.as<float>(), 0.f, nullptr);
      DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
      check_bf16(p, download<uint16_t>(yb, n_tok * n_out), what);
      const auto f = download<float>(yf, n_tok * n_out);
      EXPECT_LE(rel_l2(std::vector<double>(f.begin(), f.end()), p.ref), 1e-5) << what << " f32, n_tok=" << n_tok;
      if (after_call) after_call(rep);
    }
  }
}

// Algorithms chosen by timing give the same products (to float32 accumulation order): every
// shape here is chosen for on its first call, by timing or (66 rows, in 72's bucket) by taking
// its bucket's timed choice, and a second call reuses the plan.
TEST(cuda_gemm, timed_algorithms_match_reference) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  gemm_context ctx(32u << 20, gemm_tuning{16, 512});
  int64_t chosen = 0;
  expect_products_match(ctx, {{9, 512, 256}, {72, 1000, 512}, {136, 384, 1024}, {200, 256, 768}, {66, 1000, 512}},
                        "timed cublaslt", [&](int rep) {
                          chosen += rep == 0 ? 2 : 0;
                          const gemm_tuning_stats st = ctx.tuning_stats();
                          EXPECT_EQ(st.shapes_timed + st.shapes_reused, chosen)
                              << "a shape is chosen for once, on its first call";
                        });
  const gemm_tuning_stats st = ctx.tuning_stats();
  EXPECT_GE(st.shapes_timed, 8);
  EXPECT_GT(st.ms_spent, 0.0);
  std::printf("timed %lld shapes (%lld not the heuristic's first), reused %lld, %.1f ms\n",
              static_cast<long long>(st.shapes_timed), static_cast<long long>(st.shapes_changed),
              static_cast<long long>(st.shapes_reused), st.ms_spent);
}

// With tile and split-K variants of the heuristic's first candidates timed too
// (DSPARK_GEMM_VARIANTS), whichever configuration wins must still compute the product,
// including split-K ones that reduce through the workspace; shapes of the 8B verify steps'
// cliffs (72, 136 rows) and one inside a bucket timed before (66 after 72).
TEST(cuda_gemm, timed_variants_match_reference) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  gemm_context ctx(32u << 20, gemm_tuning{16, 512, 4});
  expect_products_match(ctx, {{72, 1024, 512}, {136, 2048, 1024}, {66, 1024, 512}, {200, 256, 768}}, "timed variants");
  const gemm_tuning_stats st = ctx.tuning_stats();
  EXPECT_GT(st.variants_timed, 0) << "no variant of the heuristic's first candidates was accepted";
  std::printf("timed %lld shapes with %lld variants among the candidates; a variant won %lld times\n",
              static_cast<long long>(st.shapes_timed), static_cast<long long>(st.variants_timed),
              static_cast<long long>(st.variants_chosen));
}

// Shapes that must not be timed: above max_tokens, beta != 0 (timing would overwrite the y it
// accumulates onto), and a first call inside a graph capture (no synchronisation is allowed
// there). Each still computes the right product, in the graph's case when the graph replays.
TEST(cuda_gemm, untimed_shapes_keep_the_heuristic_choice) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  gemm_context ctx(32u << 20, gemm_tuning{16, 64});
  const problem big = make_problem(65, 256, 512, 5);
  const auto bw = upload(big.w.bits), bx = upload(big.x.bits);
  device_buffer yb(65 * 256 * 2);
  ctx.gemm(bw.as<bf>(), bx.as<bf>(), 65, 256, 512, yb.as<bf>(), nullptr);
  DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
  check_bf16(big, download<uint16_t>(yb, 65 * 256), "above max_tokens");

  const problem acc = make_problem(16, 256, 512, 6);
  const auto aw = upload(acc.w.bits), ax = upload(acc.x.bits);
  device_buffer yf(16 * 256 * 4);
  std::vector<float> c(16 * 256, 0.5f);
  DSPARK_CUDA_CHECK(cudaMemcpy(yf.data(), c.data(), c.size() * 4, cudaMemcpyHostToDevice));
  ctx.gemm(aw.as<bf>(), ax.as<bf>(), 16, 256, 512, yf.as<float>(), 1.f, nullptr);
  DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
  auto f = download<float>(yf, 16 * 256);
  std::vector<double> fd(f.size());
  for (size_t i = 0; i < f.size(); ++i) fd[i] = static_cast<double>(f[i]) - 0.5;
  EXPECT_LE(rel_l2(fd, acc.ref), 1e-5) << "beta = 1 on a new shape";

  const problem cap = make_problem(24, 320, 256, 7);
  const auto cw = upload(cap.w.bits), cx = upload(cap.x.bits);
  device_buffer yc(24 * 320 * 2);
  poison(yc);
  cudaStream_t s = nullptr;
  DSPARK_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  DSPARK_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  ctx.gemm(cw.as<bf>(), cx.as<bf>(), 24, 320, 256, yc.as<bf>(), s);
  DSPARK_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
  DSPARK_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  DSPARK_CUDA_CHECK(cudaGraphLaunch(exec, s));
  DSPARK_CUDA_CHECK(cudaStreamSynchronize(s));
  check_bf16(cap, download<uint16_t>(yc, 24 * 320), "first call inside a capture");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(s);
  EXPECT_EQ(ctx.tuning_stats().shapes_timed + ctx.tuning_stats().shapes_reused, 0);
}

TEST(cuda_gemm, tuning_settings_parse_and_reject_bad_values) {
  const gemm_tuning d = gemm_tuning::parse(nullptr, "");
  EXPECT_EQ(d.candidates, gemm_tuning{}.candidates);
  EXPECT_EQ(d.max_tokens, gemm_tuning{}.max_tokens);
  EXPECT_EQ(d.variants, 0);
  const gemm_tuning t = gemm_tuning::parse("1", "256", "4");
  EXPECT_EQ(t.candidates, 1);
  EXPECT_EQ(t.max_tokens, 256);
  EXPECT_EQ(t.variants, 4);
  for (const char* bad : {"-1", "17", "x"}) EXPECT_THROW(gemm_tuning::parse(nullptr, nullptr, bad), std::invalid_argument) << bad;
  for (const char* bad : {"0", "65", "x", "8x", "-3"}) EXPECT_THROW(gemm_tuning::parse(bad, nullptr), std::invalid_argument) << bad;
  EXPECT_THROW(gemm_tuning::parse(nullptr, "-1"), std::invalid_argument);
}

// Both GEMV implementations, called directly (gemv_bf16 dispatches to one of them per process).
struct gemv_variant {
  const char* name;
  void (*to_bf16)(const bf*, const bf*, int64_t, int64_t, int64_t, bf*, cudaStream_t);
  void (*to_f32)(const bf*, const bf*, int64_t, int64_t, int64_t, float*, cudaStream_t);
};
const gemv_variant k_gemv_variants[] = {{"simt", gemv_bf16_simt, gemv_bf16_simt},
                                        {"simt rows 4", gemv_bf16_simt_rows4, gemv_bf16_simt_rows4},
                                        {"mma", gemv_bf16_mma, gemv_bf16_mma}};

// Shapes: n_in = 4104 is 513 chunks of 8 (the SIMT kernel's unrolled body and tail; the mma
// kernel's last 32-feature k-block only partly inside), n_out = 203 ends inside a 16-row tile;
// 576 x 1536 is SmolLM2's down projection.
const std::pair<int64_t, int64_t> k_gemv_shapes[] = {{203, 4104}, {576, 1536}, {40, 64}};

TEST(cuda_gemv, all_token_counts_match_reference) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  for (const auto& v : k_gemv_variants)
    for (auto [n_out, n_in] : k_gemv_shapes)
      for (int64_t n_tok = 1; n_tok <= k_gemv_max_tokens; ++n_tok) {
        const problem p = make_problem(n_tok, n_out, n_in, static_cast<uint32_t>(900 + n_tok + n_in));
        const auto dw = upload(p.w.bits), dx = upload(p.x.bits);
        device_buffer yb(n_tok * p.n_out * 2), yf(n_tok * p.n_out * 4);
        poison(yb);
        poison(yf);
        v.to_bf16(dw.as<bf>(), dx.as<bf>(), n_tok, p.n_out, p.n_in, yb.as<bf>(), nullptr);
        v.to_f32(dw.as<bf>(), dx.as<bf>(), n_tok, p.n_out, p.n_in, yf.as<float>(), nullptr);
        DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
        const std::string what = std::string(v.name) + " n_tok=" + std::to_string(n_tok) + " shape " +
                                 std::to_string(n_out) + "x" + std::to_string(n_in);
        check_bf16(p, download<uint16_t>(yb, n_tok * p.n_out), ("bf16 out, " + what).c_str());
        EXPECT_LE(rel_l2(download<float>(yf, n_tok * p.n_out), p.ref), 1e-5) << "f32 out, " << what;
      }
}

TEST(cuda_gemv, each_token_row_is_bitwise_independent_of_the_token_count) {
  // Speculative verification relies on it: a token's output must not depend on how many other
  // tokens share the launch (SIMT: 1..8 take different kernels, 1, 2 or 4 rows per warp, and a
  // lone token always runs with 1; mma: the tokens are independent N columns of the same tiles).
  DSPARK_REQUIRE_CUDA_DEVICE();
  for (const auto& v : k_gemv_variants)
    for (auto [n_out, n_in] : k_gemv_shapes) {
      const problem p = make_problem(k_gemv_max_tokens, n_out, n_in, 4242u);
      const auto dw = upload(p.w.bits), dx = upload(p.x.bits);
      device_buffer all(k_gemv_max_tokens * p.n_out * 4);
      device_buffer one(p.n_out * 4);
      for (int64_t n_tok = 1; n_tok <= k_gemv_max_tokens; ++n_tok) {
        v.to_f32(dw.as<bf>(), dx.as<bf>(), n_tok, p.n_out, p.n_in, all.as<float>(), nullptr);
        DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
        const auto got = download<float>(all, n_tok * p.n_out);
        for (int64_t t = 0; t < n_tok; ++t) {
          v.to_f32(dw.as<bf>(), dx.as<bf>() + t * p.n_in, 1, p.n_out, p.n_in, one.as<float>(), nullptr);
          DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
          const auto ref = download<float>(one, p.n_out);
          EXPECT_EQ(0, std::memcmp(got.data() + t * p.n_out, ref.data(), p.n_out * 4))
              << v.name << ": token " << t << " of " << n_tok << " (shape " << n_out << "x" << n_in
              << ") differs from the same row computed alone";
        }
      }
    }
}

TEST(cuda_gemv, dispatch_follows_the_process_setting) {
  // gemv_bf16 is bit-identical to the implementation gemv_kind() names (DSPARK_GEMV).
  DSPARK_REQUIRE_CUDA_DEVICE();
  const problem p = make_problem(5, 203, 4104, 77u);
  const auto dw = upload(p.w.bits), dx = upload(p.x.bits);
  device_buffer a(5 * p.n_out * 4), b(5 * p.n_out * 4);
  gemv_bf16(dw.as<bf>(), dx.as<bf>(), 5, p.n_out, p.n_in, a.as<float>(), nullptr);
  if (gemv_kind() == gemv_impl::mma) gemv_bf16_mma(dw.as<bf>(), dx.as<bf>(), 5, p.n_out, p.n_in, b.as<float>(), nullptr);
  else gemv_bf16_simt(dw.as<bf>(), dx.as<bf>(), 5, p.n_out, p.n_in, b.as<float>(), nullptr);
  DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
  const auto x = download<float>(a, 5 * p.n_out), y = download<float>(b, 5 * p.n_out);
  EXPECT_EQ(0, std::memcmp(x.data(), y.data(), x.size() * 4)) << "gemv_bf16 is not " << gemv_name(gemv_kind());
}

}  // namespace
}  // namespace dspark::cuda::test

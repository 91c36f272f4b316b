// Fused QKV bias + q/k RMSNorm + RoPE + paged K/V write against a double-precision reference.
//
// Cases: both pairings, with and without q/k norm and bias, partial rotation (n_rot <
// head_dim), head_dim 64 and 128, slots scattered over the cache and one padding token
// (slot -1) that must write nothing. Tolerance for bf16 outputs: 1e-3 + 8e-3|ref| (one bf16
// rounding plus float32 angle error pos * inv_freq, ~3e-4 rad at the positions used).
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>

#include "kernels/cuda/rope.h"
#include "tests/cuda/cuda_test_util.h"

namespace dspark::cuda::test {
namespace {

using bf = __nv_bfloat16;

struct rope_case {
  int head_dim, n_rot;
  rope_pairing pairing;
  bool norm, bias;
};

class rope_test : public ::testing::TestWithParam<rope_case> {};

TEST_P(rope_test, matches_reference) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  const rope_case c = GetParam();
  std::mt19937 rng(11 + c.head_dim + c.n_rot + static_cast<int>(c.pairing) * 3 + c.norm * 7 + c.bias * 13);
  const int n_tok = 23, nh = 6, nkv = 2, hd = c.head_dim, bs = 16, n_blocks = 5;
  const int width = (nh + 2 * nkv) * hd, stride = width + 8;
  const auto qkv = random_bf16(rng, static_cast<size_t>(n_tok) * stride, -2.f, 2.f);
  const auto bias = random_floats(rng, width, -0.5f, 0.5f);
  const auto qn = random_floats(rng, hd, 0.5f, 1.5f);
  const auto kn = random_floats(rng, hd, 0.5f, 1.5f);
  std::vector<float> inv_freq(c.n_rot / 2);
  for (int i = 0; i < c.n_rot / 2; ++i) inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / c.n_rot));
  std::vector<int32_t> pos(n_tok), slots(n_tok);
  std::uniform_int_distribution<int> pick_pos(0, 4000);
  for (auto& p : pos) p = pick_pos(rng);
  std::vector<int32_t> perm(n_blocks * bs);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  for (int t = 0; t < n_tok; ++t) slots[t] = perm[t];
  slots[4] = -1;  // padding token

  // Reference: per head, x = row + bias; norm; rotate.
  auto head_ref = [&](int t, int h, bool is_q, std::vector<double>& out) {
    out.assign(hd, 0.0);
    std::vector<double> x(hd);
    for (int i = 0; i < hd; ++i) x[i] = qkv.values[t * stride + h * hd + i] + (c.bias ? bias[h * hd + i] : 0.0);
    if (c.norm) {
      double ss = 0;
      for (double v : x) ss += v * v;
      const double inv = 1.0 / std::sqrt(ss / hd + 1e-6);
      for (int i = 0; i < hd; ++i) x[i] *= inv * (is_q ? qn[i] : kn[i]);
    }
    out = x;
    for (int i = 0; i < c.n_rot / 2; ++i) {
      const int a = c.pairing == rope_pairing::interleaved ? 2 * i : i;
      const int b = c.pairing == rope_pairing::interleaved ? 2 * i + 1 : i + c.n_rot / 2;
      const double ang = static_cast<double>(pos[t]) * inv_freq[i];
      out[a] = x[a] * std::cos(ang) - x[b] * std::sin(ang);
      out[b] = x[a] * std::sin(ang) + x[b] * std::cos(ang);
    }
  };

  const auto d_qkv = upload(qkv.bits);
  const auto d_bias = upload(bias);
  const auto d_qn = upload(qn), d_kn = upload(kn);
  const auto d_inv = upload(inv_freq);
  const auto d_pos = upload(pos), d_slots = upload(slots);
  const size_t cache_elems = static_cast<size_t>(n_blocks) * nkv * bs * hd;
  device_buffer d_q(static_cast<size_t>(n_tok) * nh * hd * 2), d_k(cache_elems * 2), d_v(cache_elems * 2);
  poison(d_q);
  poison(d_k);
  poison(d_v);
  rope_kv_params p;
  p.qkv = d_qkv.as<bf>();
  p.qkv_stride = stride;
  p.qkv_bias = c.bias ? d_bias.as<float>() : nullptr;
  p.n_tokens = n_tok;
  p.n_head = nh;
  p.n_kv_head = nkv;
  p.head_dim = hd;
  p.n_rot = c.n_rot;
  p.positions = d_pos.as<int32_t>();
  p.inv_freq = d_inv.as<float>();
  p.pairing = c.pairing;
  p.q_norm = c.norm ? d_qn.as<float>() : nullptr;
  p.k_norm = c.norm ? d_kn.as<float>() : nullptr;
  p.norm_eps = 1e-6f;
  p.q_out = d_q.as<bf>();
  p.k_cache = d_k.as<bf>();
  p.v_cache = d_v.as<bf>();
  p.block_size = bs;
  p.n_cache_slots = n_blocks * bs;
  p.slots = d_slots.as<int32_t>();
  rope_qk_norm_kv_write(p, nullptr);
  DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
  const auto q = bf16_to_double(download<uint16_t>(d_q, static_cast<size_t>(n_tok) * nh * hd));
  const auto k = bf16_to_double(download<uint16_t>(d_k, cache_elems));
  const auto v = bf16_to_double(download<uint16_t>(d_v, cache_elems));

  std::vector<double> got, ref;
  std::vector<bool> written(cache_elems, false);
  for (int t = 0; t < n_tok; ++t) {
    for (int h = 0; h < nh; ++h) {
      head_ref(t, h, true, ref);
      got.assign(q.begin() + (t * nh + h) * hd, q.begin() + (t * nh + h + 1) * hd);
      ASSERT_LE(max_scaled_err(got, ref, 1e-3, 8e-3), 1.0) << "q t=" << t << " h=" << h;
    }
    if (slots[t] < 0) continue;
    for (int g = 0; g < nkv; ++g) {
      head_ref(t, nh + g, false, ref);
      const size_t base = ((static_cast<size_t>(slots[t] / bs) * nkv + g) * bs + slots[t] % bs) * hd;
      got.assign(k.begin() + base, k.begin() + base + hd);
      ASSERT_LE(max_scaled_err(got, ref, 1e-3, 8e-3), 1.0) << "k t=" << t << " g=" << g;
      for (int i = 0; i < hd; ++i) {
        const double vr = qkv.values[t * stride + (nh + nkv + g) * hd + i] + (c.bias ? bias[(nh + nkv + g) * hd + i] : 0.0);
        ASSERT_NEAR(v[base + i], vr, 1e-3 + 8e-3 * std::abs(vr)) << "v t=" << t << " g=" << g;
        written[base + i] = true;
      }
    }
  }
  for (size_t i = 0; i < cache_elems; ++i) {
    if (!written[i]) {
      ASSERT_TRUE(std::isnan(k[i]) && std::isnan(v[i])) << "stray cache write at " << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    cases, rope_test,
    ::testing::Values(rope_case{128, 128, rope_pairing::neox, true, false},
                      rope_case{128, 128, rope_pairing::interleaved, false, false},
                      rope_case{64, 64, rope_pairing::interleaved, false, true},
                      rope_case{64, 64, rope_pairing::neox, true, true},
                      rope_case{128, 64, rope_pairing::neox, false, false},
                      rope_case{128, 96, rope_pairing::interleaved, true, false}),
    [](const auto& info) {
      const rope_case& c = info.param;
      return "hd" + std::to_string(c.head_dim) + "_rot" + std::to_string(c.n_rot) +
             (c.pairing == rope_pairing::neox ? "_neox" : "_interleaved") + (c.norm ? "_norm" : "") +
             (c.bias ? "_bias" : "");
    });

}  // namespace
}  // namespace dspark::cuda::test

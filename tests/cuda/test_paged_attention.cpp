// Ragged paged attention against a double-precision CPU reference, and its batch invariance.
//
// A batch of 32 sequences with q_len 1..16 and cached prefixes of 0..1400 tokens, block size
// 16, block tables pointing at shuffled physical blocks. Every (variant, split_len) combination
// must match the reference within 1e-3 + 8e-3|ref| per element (bf16 output rounding, 2^-9
// relative, plus float32 softmax error). Then, with one split_len, outputs must be BIT-identical
// (a) between the decode and general variants and (b) between the ragged batch and a batch that
// decodes each of its tokens as its own q_len = 1 sequence (speculative verification == one-by-one
// decoding).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "kernels/cuda/paged_attention.h"
#include "tests/cuda/cuda_test_util.h"

namespace dspark::cuda::test {
namespace {

using bf = __nv_bfloat16;

struct attn_shape {
  int n_head, n_kv_head, head_dim;
};

struct batch {
  std::vector<int32_t> q_lens, kv_lens, cu;  // per sequence
  std::vector<int32_t> block_tables;         // [n_seqs, max_blocks]
  int max_blocks = 0;
  int n_tokens() const { return cu.back(); }
};

struct device_batch {
  device_buffer cu, kv, bt, items;
  int n_items = 0;
};

// pad: one item per token, the extra ones empty (pad_attention_items, as the runner's graphs do)
device_batch upload_batch(const batch& b, int group, attention_variant v, bool pad = false) {
  device_batch d;
  d.cu = upload(b.cu);
  d.kv = upload(b.kv_lens);
  d.bt = upload(b.block_tables);
  auto items = plan_attention_items(b.q_lens.data(), static_cast<int32_t>(b.q_lens.size()), group, v);
  if (pad) {
    const auto n = static_cast<int32_t>(items.size());
    items.resize(static_cast<size_t>(b.n_tokens()));
    EXPECT_EQ(pad_attention_items(items, n, b.n_tokens()), b.n_tokens());
  }
  d.n_items = static_cast<int>(items.size());
  d.items = upload(items);
  return d;
}

class paged_attention_test : public ::testing::TestWithParam<attn_shape> {};

TEST_P(paged_attention_test, ragged_batch_matches_reference_and_is_batch_invariant) {
  DSPARK_REQUIRE_CUDA_DEVICE();
  const attn_shape sh = GetParam();
  const int hd = sh.head_dim, nh = sh.n_head, nkv = sh.n_kv_head, G = nh / nkv;
  const int bs = 16, n_seqs = 32;
  std::mt19937 rng(77 + hd + nh);

  batch b;
  std::uniform_int_distribution<int> pick_q(1, 16), pick_prefix(0, 600);
  b.cu.push_back(0);
  for (int r = 0; r < n_seqs; ++r) {
    const int q = pick_q(rng);
    const int prefix = r % 8 == 0 ? 1000 + pick_prefix(rng) / 2 : (r % 5 == 0 ? 0 : pick_prefix(rng));
    b.q_lens.push_back(q);
    b.kv_lens.push_back(prefix + q);
    b.cu.push_back(b.cu.back() + q);
  }
  b.q_lens[1] = 1;  // make sure plain decode rows and the longest verify are both present
  b.q_lens[2] = 16;
  b.cu.assign(1, 0);
  for (int r = 0; r < n_seqs; ++r) {
    b.kv_lens[r] = std::max(b.kv_lens[r], b.q_lens[r]);
    b.cu.push_back(b.cu.back() + b.q_lens[r]);
  }
  int max_kv = 0, total_blocks = 0;
  for (int r = 0; r < n_seqs; ++r) {
    max_kv = std::max(max_kv, b.kv_lens[r]);
    total_blocks += (b.kv_lens[r] + bs - 1) / bs;
  }
  b.max_blocks = (max_kv + bs - 1) / bs;
  const int n_blocks = total_blocks + 7;  // a few never referenced
  std::vector<int32_t> perm(n_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  b.block_tables.assign(static_cast<size_t>(n_seqs) * b.max_blocks, -1);
  int next = 0;
  for (int r = 0; r < n_seqs; ++r)
    for (int k = 0; k < (b.kv_lens[r] + bs - 1) / bs; ++k) b.block_tables[r * b.max_blocks + k] = perm[next++];

  const size_t cache_elems = static_cast<size_t>(n_blocks) * nkv * bs * hd;
  const auto kc = random_bf16(rng, cache_elems), vc = random_bf16(rng, cache_elems);
  const int n_tok = b.n_tokens();
  const auto q = random_bf16(rng, static_cast<size_t>(n_tok) * nh * hd, -2.f, 2.f);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));

  // Reference.
  std::vector<double> ref(static_cast<size_t>(n_tok) * nh * hd);
  auto kv_at = [&](const std::vector<double>& c, int r, int pos, int g, int d) {
    const int blk = b.block_tables[r * b.max_blocks + pos / bs];
    return c[((static_cast<size_t>(blk) * nkv + g) * bs + pos % bs) * hd + d];
  };
  for (int r = 0; r < n_seqs; ++r) {
    for (int i = 0; i < b.q_lens[r]; ++i) {
      const int t = b.cu[r] + i, pos = b.kv_lens[r] - b.q_lens[r] + i;
      for (int h = 0; h < nh; ++h) {
        const int g = h / G;
        std::vector<double> s(pos + 1);
        double mx = -INFINITY;
        for (int k = 0; k <= pos; ++k) {
          double dot = 0;
          for (int d = 0; d < hd; ++d) dot += q.values[(static_cast<size_t>(t) * nh + h) * hd + d] * kv_at(kc.values, r, k, g, d);
          s[k] = dot * scale;
          mx = std::max(mx, s[k]);
        }
        double sum = 0;
        for (auto& x : s) sum += (x = std::exp(x - mx));
        for (int d = 0; d < hd; ++d) {
          double o = 0;
          for (int k = 0; k <= pos; ++k) o += s[k] * kv_at(vc.values, r, k, g, d);
          ref[(static_cast<size_t>(t) * nh + h) * hd + d] = o / sum;
        }
      }
    }
  }

  const auto d_q = upload(q.bits), d_k = upload(kc.bits), d_v = upload(vc.bits);
  const size_t out_elems = static_cast<size_t>(n_tok) * nh * hd;
  auto run = [&](const batch& bb, const device_buffer& dq, attention_variant v, int split_len, bool pad = false) {
    const device_batch db = upload_batch(bb, G, v, pad);
    int mk = 0;
    for (int x : bb.kv_lens) mk = std::max(mk, x);
    const int n_splits = attention_n_splits(mk, split_len);
    device_buffer ws(paged_attention_workspace_bytes(bb.n_tokens(), nh, hd, n_splits));
    device_buffer out(static_cast<size_t>(bb.n_tokens()) * nh * hd * 2);
    poison(out);
    if (!ws.empty()) poison(ws);
    paged_attention_params p;
    p.q = dq.as<bf>();
    p.k_cache = d_k.as<bf>();
    p.v_cache = d_v.as<bf>();
    p.out = out.as<bf>();
    p.cu_q_lens = db.cu.as<int32_t>();
    p.kv_lens = db.kv.as<int32_t>();
    p.block_tables = db.bt.as<int32_t>();
    p.max_blocks_per_seq = bb.max_blocks;
    p.items = db.items.as<attention_work_item>();
    p.n_items = db.n_items;
    p.n_tokens = bb.n_tokens();
    p.n_head = nh;
    p.n_kv_head = nkv;
    p.head_dim = hd;
    p.block_size = bs;
    p.scale = static_cast<float>(scale);
    p.variant = v;
    p.split_len = split_len;
    p.n_splits = n_splits;
    p.workspace = ws.data();
    paged_attention(p, nullptr);
    DSPARK_CUDA_CHECK(cudaDeviceSynchronize());
    return download<uint16_t>(out, static_cast<size_t>(bb.n_tokens()) * nh * hd);
  };

  std::vector<uint16_t> dec256, gen256;
  for (attention_variant v : {attention_variant::decode, attention_variant::general}) {
    for (int split_len : {1 << 20, 256, 96}) {
      const auto out = run(b, d_q, v, split_len);
      size_t worst = 0;
      const double e = max_scaled_err(bf16_to_double(out), ref, 1e-3, 8e-3, &worst);
      EXPECT_LE(e, 1.0) << "variant " << static_cast<int>(v) << " split_len " << split_len << " worst element "
                        << worst << " ref " << ref[worst];
      if (split_len == 256) (v == attention_variant::decode ? dec256 : gen256) = out;
    }
  }
  ASSERT_EQ(dec256.size(), out_elems);
  EXPECT_EQ(0, std::memcmp(dec256.data(), gen256.data(), out_elems * 2)) << "variants differ bitwise";
  // Padded to one item per token (the runner's graphed steps): the empty items change nothing.
  for (attention_variant v : {attention_variant::decode, attention_variant::general}) {
    const auto padded = run(b, d_q, v, 256, true);
    EXPECT_EQ(0, std::memcmp(dec256.data(), padded.data(), out_elems * 2))
        << "padding items changes the output, variant " << static_cast<int>(v);
  }

  // Every token as its own decode sequence (q_len 1, kv_len = its position + 1), same blocks.
  batch one;
  one.max_blocks = b.max_blocks;
  one.cu.push_back(0);
  for (int r = 0; r < n_seqs; ++r) {
    for (int i = 0; i < b.q_lens[r]; ++i) {
      one.q_lens.push_back(1);
      one.kv_lens.push_back(b.kv_lens[r] - b.q_lens[r] + i + 1);
      one.cu.push_back(one.cu.back() + 1);
      one.block_tables.insert(one.block_tables.end(), b.block_tables.begin() + r * b.max_blocks,
                              b.block_tables.begin() + (r + 1) * b.max_blocks);
    }
  }
  const auto one_by_one = run(one, d_q, attention_variant::decode, 256);
  size_t diffs = 0;
  for (size_t i = 0; i < out_elems; ++i) diffs += one_by_one[i] != dec256[i];
  EXPECT_EQ(diffs, 0u) << "verify-path attention differs from one-by-one decode in " << diffs << " elements";
}

TEST(paged_attention_plan, pads_with_empty_items_and_rejects_what_does_not_fit) {
  const int32_t q_lens[] = {3, 1, 4};
  std::vector<attention_work_item> items(8, attention_work_item{7, 7, 7});
  const int32_t n = plan_attention_items(q_lens, 3, 4, attention_variant::decode, items);
  ASSERT_EQ(n, 5);  // 2 tokens an item at G = 4: {0,0,2} {0,2,1} {1,0,1} {2,0,2} {2,2,2}
  EXPECT_EQ(pad_attention_items(items, n, 8), 8);
  for (int i = n; i < 8; ++i) {
    EXPECT_EQ(items[i].seq, 0);
    EXPECT_EQ(items[i].q_count, 0) << "item " << i;
  }
  EXPECT_EQ(items[4].seq, 2);
  EXPECT_EQ(items[4].q_count, 2);
  EXPECT_EQ(pad_attention_items(items, 5, 5), 5);
  EXPECT_THROW(pad_attention_items(items, 5, 9), std::invalid_argument);
  EXPECT_THROW(pad_attention_items(items, 6, 5), std::invalid_argument);
}

INSTANTIATE_TEST_SUITE_P(shapes, paged_attention_test,
                         ::testing::Values(attn_shape{8, 2, 128}, attn_shape{9, 3, 64}),
                         [](const auto& info) {
                           return "h" + std::to_string(info.param.n_head) + "_kv" +
                                  std::to_string(info.param.n_kv_head) + "_hd" +
                                  std::to_string(info.param.head_dim);
                         });

}  // namespace
}  // namespace dspark::cuda::test

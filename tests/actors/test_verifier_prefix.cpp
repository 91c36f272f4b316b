// verifier_core with prefix caching, driven directly (no sockets): KV admission counts blocks
// shared through the prefix cache once, so more requests run than the worst-case budget alone
// allows, and still no request meets a full cache (every one ends by length, equal to plain
// generate() on a cold backend), and every physical block is free again at the end.
//
// Sizes: block 4, budget = physical pool = 40 blocks. A request (42 prompt tokens, 40 of them
// shared, 12 generated) reserves ceil(min(64, 42 + 12 + 1) / 4) = 14 blocks, so the budget alone
// admits 2 at a time (28; a third would make 42 > 40). Once two running requests share the 10
// prefix blocks, the credit S = 10 admits a third (42 <= 40 + 10), whose attach makes S = 20 and
// admits a fourth (56 <= 60): physically 10 shared + 4 x 4 own blocks = 26 of 40.
#include <gtest/gtest.h>

#include <map>
#include <variant>
#include <vector>

#include "actors/verifier_core.h"
#include "engine/generator.h"
#include "engine/spec/policy.h"
#include "messages/engine_messages.h"
#include "tests/spec/tiny_model.h"

namespace dspark::actors {
namespace {

using dspark::test::tiny_model;

cpu_backend_options pool_options() {
  cpu_backend_options o = tiny_model::options(4);
  o.n_ctx = 64;
  o.kv_block_size = 4;
  o.kv_blocks = 40;
  return o;
}

TEST(VerifierPrefixCache, SharedBlocksAreCountedOnceAndNothingRunsOutOfKv) {
  tiny_model tm(/*n_vocab=*/16, /*n_layer=*/2, /*seed=*/5);
  cpu_backend be(tm.cfg, tm.w, pool_options());
  std::map<uint64_t, msg::request_done> done;
  auto sink = [&](const std::string&, const std::string& frame) {
    msg::engine_message m = msg::decode_engine_message(frame);
    if (auto* d = std::get_if<msg::request_done>(&m)) done[d->key] = *d;
    EXPECT_FALSE(std::holds_alternative<msg::request_rejected>(m));
  };
  verifier_options vo;
  vo.max_requests = 4;
  vo.kv_block_size = 4;
  vo.kv_blocks = 40;
  vo.prefix_cache = true;
  verifier_core v(be, nullptr, std::make_unique<fixed_gamma_policy>(0), nullptr, {}, vo, sink);

  std::vector<int32_t> shared;
  for (int32_t i = 0; i < 40; ++i) shared.push_back((i * 5 + 1) % 16);
  std::vector<std::vector<int32_t>> prompts;
  for (int32_t r = 0; r < 6; ++r) {
    prompts.push_back(shared);
    prompts.back().insert(prompts.back().end(), {r, (r * 3 + 2) % 16});
  }
  std::string frame;
  auto submit = [&](uint64_t key) {
    msg::submit_request s;
    s.key = key;
    s.prompt = prompts[key];
    s.params.max_tokens = 12;
    msg::encode(s, frame);
    v.handle("intake", frame);
  };
  // Two requests first: admitted together (28 of 40 blocks), they share nothing yet (neither
  // had published when the other attached). Then four more queue behind them.
  submit(0);
  submit(1);
  v.step();
  EXPECT_EQ(v.status().active_requests, 2);
  for (uint64_t k = 2; k < 6; ++k) submit(k);
  int32_t max_active = 0, max_shared = 0;
  for (int guard = 0; v.busy(); ++guard) {
    ASSERT_LT(guard, 1000);
    v.step();
    const msg::status_report s = v.status();
    max_active = std::max(max_active, s.active_requests);
    max_shared = std::max(max_shared, s.kv_blocks_shared);
    EXPECT_LE(s.kv_blocks_used - s.kv_blocks_shared, s.kv_blocks_total);
  }
  EXPECT_EQ(max_active, 4);   // the budget alone admits 2
  EXPECT_EQ(max_shared, 30);  // 10 prefix blocks held by 4 requests: 30 references saved

  cpu_backend cold(tm.cfg, tm.w, pool_options());
  sampling_params sp;
  sp.max_tokens = 12;
  ASSERT_EQ(done.size(), 6u);
  for (uint64_t k = 0; k < 6; ++k) {
    EXPECT_EQ(done[k].reason, msg::end_reason::length) << "request " << k;
    EXPECT_EQ(done[k].token_ids, generate(cold, nullptr, {}, prompts[k], sp).token_ids) << "request " << k;
    EXPECT_EQ(done[k].stats.cached_tokens, k < 2 ? 0 : 40) << "request " << k;
  }
  EXPECT_EQ(be.kv().free_blocks(), 40);
  EXPECT_EQ(v.status().kv_blocks_used, 0);
}

}  // namespace
}  // namespace dspark::actors

// Server-internal message codecs (messages/engine_messages.h, drafter_messages.h): every message
// round-trips field for field; truncated, mutated, oversized and foreign frames give wire_error,
// never a crash or an allocation of the claimed size.
#include <random>

#include <gtest/gtest.h>

#include "messages/drafter_messages.h"
#include "messages/engine_messages.h"
#include "messages/wire.h"

namespace dspark::msg {
namespace {

std::vector<std::string> engine_samples() {
  std::vector<std::string> out;
  std::string b;
  submit_request s;
  s.key = 42;
  s.prompt = {1, 2, 3, 49151};
  s.params.temperature = 0.7f;
  s.params.top_k = 40;
  s.params.top_p = 0.9f;
  s.params.min_p = 0.05f;
  s.params.seed = 123456789012345ull;
  s.params.max_tokens = 17;
  s.params.stop = {"\n\n", "END"};
  encode(s, b), out.push_back(b);
  encode(cancel_request{7}, b), out.push_back(b);
  encode(status_query{9}, b), out.push_back(b);
  encode(token_delta{42, {5, 6}, "h\xc3\xa9"}, b), out.push_back(b);
  request_done d;
  d.key = 42;
  d.token_ids = {5, 6, 7};
  d.text = "abc";
  d.reason = end_reason::context_full;
  d.stats = {10, 3, 0.5, 0.01, 100.0, 2.5, 4, 12, 6};
  encode(d, b), out.push_back(b);
  encode(request_rejected{42, reject_code::overloaded, "full"}, b), out.push_back(b);
  status_report r;
  r.cookie = 3;
  r.active_requests = 2;
  r.kv_blocks_total = 64;
  r.kv_blocks_used = 10;
  r.backend_free_blocks = 50;
  r.acceptance_by_position = {0.9f, 0.5f};
  r.drafter = "ngram";
  r.drafter_timeouts = 1;
  encode(r, b), out.push_back(b);
  return out;
}

std::vector<std::string> drafter_samples() {
  std::vector<std::string> out;
  std::string b;
  encode(drafter_hello{"layerskip:8", draft_dist_kind::sparse, 16, {3, 7}}, b), out.push_back(b);
  drafter_proposal p;
  p.seq = 5;
  p.slots = {{0, {{11, 0.9f, {}, {}}, {12, 0.5f, {3, 12}, {0.25f, 0.75f}}}}, {2, {}}};
  encode(p, b), out.push_back(b);
  encode(drafter_reset{"/dspark-features-1-0", 1 << 20}, b), out.push_back(b);
  encode(drafter_begin{1, {1, 2, 3}}, b), out.push_back(b);
  drafter_propose q;
  q.seq = 5;
  q.items = {{0, 4, 10, 1, 2, 0.f, 0, 1.f, 0.f}, {3, 2, 7, 9, 9, 1.f, 5, 0.9f, 0.1f}};
  encode(q, b), out.push_back(b);
  drafter_commit c;
  c.slot = 1;
  c.tokens = {4, 5};
  c.n_accepted = 1;
  c.n_proposed = 3;
  c.n_layers = 2;
  c.n_rows = 2;
  c.n_embd = 3;
  c.features = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
  encode(c, b), out.push_back(b);
  drafter_commit cs;  // features in the shared segment: no payload, an offset
  cs.slot = 0;
  cs.tokens = {9};
  cs.n_layers = 2;
  cs.n_rows = 3;
  cs.n_embd = 4;
  cs.features_shm = true;
  cs.shm_offset = 128;
  encode(cs, b), out.push_back(b);
  encode(drafter_rollback{1, 9}, b), out.push_back(b);
  encode(drafter_end{1}, b), out.push_back(b);
  return out;
}

TEST(EngineMessages, RoundTripFieldForField) {
  std::string b;
  submit_request s;
  s.key = 42;
  s.prompt = {1, 2, 3};
  s.params.temperature = 0.5f;
  s.params.seed = 99;
  s.params.max_tokens = 8;
  s.params.stop = {"x"};
  s.params.ignore_eos = true;
  encode(s, b);
  auto m = std::get<submit_request>(decode_engine_message(b));
  EXPECT_TRUE(m.params.ignore_eos);
  EXPECT_EQ(m.key, 42u);
  EXPECT_EQ(m.prompt, s.prompt);
  EXPECT_EQ(m.params.temperature, 0.5f);
  EXPECT_EQ(m.params.seed, 99u);
  EXPECT_EQ(m.params.max_tokens, 8);
  EXPECT_EQ(m.params.stop, s.params.stop);

  request_done d;
  d.key = 1;
  d.token_ids = {9, 8};
  d.text = "hi";
  d.reason = end_reason::cancelled;
  d.stats.ttft_s = 0.25;
  d.stats.draft_tokens_accepted = 77;
  d.stats.cached_tokens = 32;
  encode(d, b);
  auto e = std::get<request_done>(decode_engine_message(b));
  EXPECT_EQ(e.token_ids, d.token_ids);
  EXPECT_EQ(e.text, "hi");
  EXPECT_EQ(e.reason, end_reason::cancelled);
  EXPECT_EQ(e.stats.ttft_s, 0.25);
  EXPECT_EQ(e.stats.draft_tokens_accepted, 77);
  EXPECT_EQ(e.stats.cached_tokens, 32);

  status_report r;
  r.cookie = 5;
  r.backend_free_blocks = 31;
  r.acceptance_by_position = {0.5f};
  r.drafter = "ngram";
  r.plans = 7;
  r.plan_request_rounds = 20;
  r.plan_drafts_verified = 33;
  r.verify_budget_max = 19;
  r.plan_seconds_sum = 0.125;
  r.plan_seconds_p99 = 0.0625;
  r.kv_blocks_shared = 4;
  r.prefix_cache_queries = 9;
  r.prefix_cache_hits = 8;
  r.prefix_cache_query_tokens = 700;
  r.prefix_cache_hit_tokens = 512;
  r.prefix_cache_evictions = 3;
  r.prefix_cache_blocks = 40;
  r.prefix_cache_evictable_blocks = 12;
  r.gate_closes = 2;
  r.gate_closed_steps = 50;
  r.gate_detached = 6;
  r.gate_plain_admitted = 11;
  r.gate_reopens = 1;
  r.gate_windows = 13;
  r.gate_open = 0;
  r.gate_last_gain = 0.25;
  r.gate_last_cost = 0.5;
  encode(r, b);
  auto q = std::get<status_report>(decode_engine_message(b));
  EXPECT_EQ(q.plans, 7);
  EXPECT_EQ(q.plan_request_rounds, 20);
  EXPECT_EQ(q.plan_drafts_verified, 33);
  EXPECT_EQ(q.verify_budget_max, 19);
  EXPECT_EQ(q.plan_seconds_sum, 0.125);
  EXPECT_EQ(q.plan_seconds_p99, 0.0625);
  EXPECT_EQ(q.kv_blocks_shared, 4);
  EXPECT_EQ(q.prefix_cache_queries, 9);
  EXPECT_EQ(q.prefix_cache_hits, 8);
  EXPECT_EQ(q.prefix_cache_query_tokens, 700);
  EXPECT_EQ(q.prefix_cache_hit_tokens, 512);
  EXPECT_EQ(q.prefix_cache_evictions, 3);
  EXPECT_EQ(q.prefix_cache_blocks, 40);
  EXPECT_EQ(q.prefix_cache_evictable_blocks, 12);
  EXPECT_EQ(q.gate_closes, 2);
  EXPECT_EQ(q.gate_closed_steps, 50);
  EXPECT_EQ(q.gate_detached, 6);
  EXPECT_EQ(q.gate_plain_admitted, 11);
  EXPECT_EQ(q.gate_reopens, 1);
  EXPECT_EQ(q.gate_windows, 13);
  EXPECT_EQ(q.gate_open, 0);
  EXPECT_EQ(q.gate_last_gain, 0.25);
  EXPECT_EQ(q.gate_last_cost, 0.5);
  EXPECT_EQ(q.cookie, 5u);
  EXPECT_EQ(q.backend_free_blocks, 31);
  EXPECT_EQ(q.acceptance_by_position, r.acceptance_by_position);
  EXPECT_EQ(q.drafter, "ngram");
}

TEST(DrafterMessages, RoundTripFieldForField) {
  std::string b;
  drafter_proposal p;
  p.seq = 5;
  p.slots = {{3, {{11, 0.9f, {}, {}}, {12, 0.5f, {3, 12}, {0.25f, 0.75f}}}}};
  encode(p, b);
  auto q = std::get<drafter_proposal>(decode_drafter_message(b));
  ASSERT_EQ(q.slots.size(), 1u);
  EXPECT_EQ(q.seq, 5u);
  EXPECT_EQ(q.slots[0].slot, 3);
  ASSERT_EQ(q.slots[0].drafts.size(), 2u);
  EXPECT_EQ(q.slots[0].drafts[1].token, 12);
  EXPECT_EQ(q.slots[0].drafts[1].sparse_ids, (std::vector<int32_t>{3, 12}));
  EXPECT_EQ(q.slots[0].drafts[1].sparse_probs, (std::vector<float>{0.25f, 0.75f}));

  drafter_commit c;
  c.slot = 2;
  c.tokens = {4};
  c.n_layers = 1;
  c.n_rows = 1;
  c.n_embd = 2;
  c.features = {0.5f, -1.f};
  encode(c, b);
  auto d = std::get<drafter_commit>(decode_drafter_message(b));
  EXPECT_EQ(d.features, c.features);
  EXPECT_EQ(d.tokens, c.tokens);

  encode(drafter_hello{"ngram", draft_dist_kind::one_hot, 0, {}}, b);
  EXPECT_EQ(std::get<drafter_hello>(decode_drafter_message(b)).name, "ngram");

  c.features_shm = true;  // shared features: the payload must be empty
  c.shm_offset = 64;
  encode(c, b);
  EXPECT_THROW(decode_drafter_message(b), wire_error);
  c.features.clear();
  encode(c, b);
  auto e = std::get<drafter_commit>(decode_drafter_message(b));
  EXPECT_TRUE(e.features_shm);
  EXPECT_EQ(e.shm_offset, 64u);
  encode(drafter_reset{"/x", 4096}, b);
  auto r = std::get<drafter_reset>(decode_drafter_message(b));
  EXPECT_EQ(r.shm_name, "/x");
  EXPECT_EQ(r.shm_bytes, 4096u);
}

// Every strict prefix of a valid frame is refused (truncation anywhere), and so is any frame
// with bytes appended.
TEST(WireCodec, TruncatedAndTrailingFramesAreErrors) {
  for (const auto& f : engine_samples()) {
    EXPECT_NO_THROW(decode_engine_message(f));
    for (size_t n = 0; n < f.size(); ++n) EXPECT_THROW(decode_engine_message(f.substr(0, n)), wire_error) << n;
    EXPECT_THROW(decode_engine_message(f + "x"), wire_error);
  }
  for (const auto& f : drafter_samples()) {
    EXPECT_NO_THROW(decode_drafter_message(f));
    for (size_t n = 0; n < f.size(); ++n) EXPECT_THROW(decode_drafter_message(f.substr(0, n)), wire_error) << n;
    EXPECT_THROW(decode_drafter_message(f + "x"), wire_error);
  }
}

TEST(WireCodec, WrongVersionTypeAndFamily) {
  std::string b;
  encode(cancel_request{1}, b);
  std::string v2 = b;
  v2[0] = 2;
  EXPECT_THROW(decode_engine_message(v2), wire_error);
  std::string bad_type = b;
  bad_type[1] = 0x7f;
  EXPECT_THROW(decode_engine_message(bad_type), wire_error);
  EXPECT_THROW(decode_drafter_message(b), wire_error);  // an engine frame on the drafter link
  encode(drafter_end{1}, b);
  EXPECT_THROW(decode_engine_message(b), wire_error);
}

// A length prefix claiming 4 GiB must be refused before anything is allocated.
TEST(WireCodec, OversizedCountsAreRefusedUnallocated) {
  std::string b;
  wire_writer w(b, static_cast<uint16_t>(engine_type::submit));
  w.u64(1);
  w.u32(0xffffffffu);  // prompt count
  try {
    decode_engine_message(b);
    FAIL() << "accepted an oversized prompt";
  } catch (const wire_error& e) {
    EXPECT_NE(std::string(e.what()).find("prompt"), std::string::npos) << e.what();
  }
  drafter_commit c;
  c.n_layers = 1;
  c.n_rows = 1;
  c.n_embd = 4;
  c.features = {1, 2, 3};  // not n_layers * n_rows * n_embd
  encode(c, b);
  EXPECT_THROW(decode_drafter_message(b), wire_error);
}

// Random byte mutations: decode either succeeds or throws wire_error; nothing else escapes.
TEST(WireCodec, FuzzedMutationsNeverCrash) {
  std::mt19937 rng(1234);
  auto samples = engine_samples();
  auto ds = drafter_samples();
  samples.insert(samples.end(), ds.begin(), ds.end());
  int errors = 0, decoded = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::string f = samples[rng() % samples.size()];
    const int n_mut = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < n_mut && !f.empty(); ++k) f[rng() % f.size()] = static_cast<char>(rng());
    if (rng() % 4 == 0) f.resize(rng() % (f.size() + 1));
    try {
      if (f.size() >= 3 && static_cast<uint8_t>(f[1]) >= 100) decode_drafter_message(f);
      else decode_engine_message(f);
      ++decoded;
    } catch (const wire_error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 1000);  // the mutations did reach the checks
  EXPECT_EQ(errors + decoded, 20000);
}

}  // namespace
}  // namespace dspark::msg

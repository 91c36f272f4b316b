// KV cache bookkeeping: sequence slots, block reservation, truncate, free, exhaustion status,
// and isolation between sequences.
#include <gtest/gtest.h>

#include <set>

#include "common/error.h"
#include "engine/kv_cache.h"

namespace dspark {
namespace {

kv_cache_params small_params() {
  kv_cache_params p;
  p.n_layer = 2;
  p.n_head_kv = 2;
  p.head_dim = 4;
  p.n_seq_max = 3;
  p.n_ctx = 20;
  p.block_size = 4;
  p.n_blocks = 8;
  return p;
}

// Fills positions [from, to) of `seq` with a value identifying (layer, seq, pos, element).
void fill(kv_cache& kv, int32_t seq, int32_t from, int32_t to) {
  for (int64_t l = 0; l < kv.params().n_layer; ++l)
    for (int32_t p = from; p < to; ++p)
      for (int64_t i = 0; i < kv.row_size(); ++i) {
        kv.k_at(l, seq, p)[i] = static_cast<float>(l * 100000 + seq * 10000 + p * 100 + i);
        kv.v_at(l, seq, p)[i] = -static_cast<float>(l * 100000 + seq * 10000 + p * 100 + i);
      }
}

void expect_filled(kv_cache& kv, int32_t seq, int32_t from, int32_t to) {
  for (int64_t l = 0; l < kv.params().n_layer; ++l)
    for (int32_t p = from; p < to; ++p)
      for (int64_t i = 0; i < kv.row_size(); ++i) {
        ASSERT_EQ(kv.k_at(l, seq, p)[i], static_cast<float>(l * 100000 + seq * 10000 + p * 100 + i))
            << "seq " << seq << " pos " << p;
        ASSERT_EQ(kv.v_at(l, seq, p)[i], -static_cast<float>(l * 100000 + seq * 10000 + p * 100 + i));
      }
}

TEST(KvCache, OpenReserveCommitLength) {
  kv_cache kv(small_params());
  const auto s = kv.open_sequence();
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(kv.length(*s), 0);
  EXPECT_EQ(kv.capacity(*s), 0);
  EXPECT_EQ(kv.blocks_needed(*s, 5), 2);
  ASSERT_EQ(kv.reserve(*s, 5), kv_status::ok);
  EXPECT_EQ(kv.capacity(*s), 8);
  EXPECT_EQ(kv.free_blocks(), 6);
  kv.commit(*s, 5);
  EXPECT_EQ(kv.length(*s), 5);
  EXPECT_EQ(kv.blocks_needed(*s, 8), 0);
  EXPECT_THROW(kv.commit(*s, 9), invalid_argument_error);  // beyond the reserved capacity
}

TEST(KvCache, SequenceSlotsRunOutAndComeBack) {
  kv_cache kv(small_params());
  std::set<int32_t> ids;
  for (int i = 0; i < 3; ++i) ids.insert(*kv.open_sequence());
  EXPECT_EQ(ids.size(), 3u);
  EXPECT_FALSE(kv.open_sequence().has_value());
  kv.free_sequence(1);
  EXPECT_FALSE(kv.is_open(1));
  EXPECT_EQ(kv.open_sequence(), std::optional<int32_t>(1));
}

TEST(KvCache, TruncateIsBookkeepingOnlyAndKeepsData) {
  kv_cache kv(small_params());
  const int32_t s = *kv.open_sequence();
  ASSERT_EQ(kv.reserve(s, 10), kv_status::ok);
  fill(kv, s, 0, 10);
  kv.commit(s, 10);
  const int32_t free_before = kv.free_blocks();
  kv.truncate(s, 3);
  EXPECT_EQ(kv.length(s), 3);
  EXPECT_EQ(kv.capacity(s), 12);             // blocks are kept for the next step
  EXPECT_EQ(kv.free_blocks(), free_before);
  expect_filled(kv, s, 0, 3);                // the kept prefix is untouched
  EXPECT_EQ(kv.blocks_needed(s, 10), 0);     // re-growing needs no new block
  EXPECT_THROW(kv.truncate(s, 4), invalid_argument_error);  // only shrinks
  EXPECT_THROW(kv.truncate(s, -1), invalid_argument_error);
}

TEST(KvCache, FreeReturnsBlocksToThePool) {
  kv_cache kv(small_params());
  const int32_t a = *kv.open_sequence();
  ASSERT_EQ(kv.reserve(a, 16), kv_status::ok);
  EXPECT_EQ(kv.free_blocks(), 4);
  kv.free_sequence(a);
  EXPECT_EQ(kv.free_blocks(), 8);
  EXPECT_THROW(kv.length(a), invalid_argument_error);
}

TEST(KvCache, ExhaustionIsAStatusAndChangesNothing) {
  kv_cache kv(small_params());
  const int32_t a = *kv.open_sequence(), b = *kv.open_sequence();
  ASSERT_EQ(kv.reserve(a, 20), kv_status::ok);  // 5 of 8 blocks
  EXPECT_EQ(kv.reserve(b, 13), kv_status::out_of_blocks);  // would need 4
  EXPECT_EQ(kv.capacity(b), 0);
  EXPECT_EQ(kv.free_blocks(), 3);
  EXPECT_EQ(kv.reserve(a, 21), kv_status::exceeds_n_ctx);
  EXPECT_EQ(kv.capacity(a), 20);
  EXPECT_EQ(kv.reserve(b, 12), kv_status::ok);
  EXPECT_EQ(kv.free_blocks(), 0);
}

TEST(KvCache, SequencesDoNotInterfere) {
  kv_cache kv(small_params());
  const int32_t a = *kv.open_sequence(), b = *kv.open_sequence(), c = *kv.open_sequence();
  // Interleaved growth fragments the pool: a and b alternate blocks.
  for (int32_t step = 0; step < 3; ++step) {
    for (int32_t s : {a, b}) {
      ASSERT_EQ(kv.reserve(s, (step + 1) * 4), kv_status::ok);
      fill(kv, s, step * 4, (step + 1) * 4);
      kv.commit(s, (step + 1) * 4);
    }
  }
  ASSERT_EQ(kv.reserve(c, 9), kv_status::out_of_blocks);  // 2 blocks left, 9 positions need 3
  ASSERT_EQ(kv.reserve(c, 4), kv_status::ok);
  fill(kv, c, 0, 4);
  kv.commit(c, 4);
  kv.truncate(a, 2);        // rolling a back ...
  kv.free_sequence(b);      // ... and freeing b ...
  expect_filled(kv, c, 0, 4);  // ... leaves c intact
  expect_filled(kv, a, 0, 2);
  const int32_t* table = kv.block_table(a);
  std::set<int32_t> blocks(table, table + 3);
  EXPECT_EQ(blocks.size(), 3u);
  EXPECT_FALSE(blocks.count(kv.block_table(c)[0]));
}

TEST(KvCache, RejectsBadParamsAndClosedSequences) {
  kv_cache_params p = small_params();
  p.block_size = 0;
  EXPECT_THROW(kv_cache{p}, invalid_argument_error);
  kv_cache kv(small_params());
  EXPECT_THROW(kv.reserve(0, 1), invalid_argument_error);
  EXPECT_THROW(kv.free_sequence(7), invalid_argument_error);
}

}  // namespace
}  // namespace dspark

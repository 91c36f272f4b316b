// KV cache bookkeeping: sequence slots, block reservation, truncate, free, exhaustion status,
// and isolation between sequences; automatic prefix caching (engine/kv_block_pool.h): publish
// and attach, reference counts, the LRU eviction order, running out of blocks, and truncation
// into shared or published blocks never changing another sequence's K/V.
#include <gtest/gtest.h>

#include <numeric>
#include <set>
#include <vector>

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

// Fills positions [from, to) of `seq` with a value identifying (layer, tag, pos, element); the
// tag is the sequence id unless given.
void fill(kv_cache& kv, int32_t seq, int32_t from, int32_t to, int32_t tag = -1) {
  if (tag < 0) tag = seq;
  for (int64_t l = 0; l < kv.params().n_layer; ++l)
    for (int32_t p = from; p < to; ++p)
      for (int64_t i = 0; i < kv.row_size(); ++i) {
        kv.k_at(l, seq, p)[i] = static_cast<float>(l * 100000 + tag * 10000 + p * 100 + i);
        kv.v_at(l, seq, p)[i] = -static_cast<float>(l * 100000 + tag * 10000 + p * 100 + i);
      }
}

void expect_filled(kv_cache& kv, int32_t seq, int32_t from, int32_t to, int32_t tag = -1) {
  if (tag < 0) tag = seq;
  for (int64_t l = 0; l < kv.params().n_layer; ++l)
    for (int32_t p = from; p < to; ++p)
      for (int64_t i = 0; i < kv.row_size(); ++i) {
        ASSERT_EQ(kv.k_at(l, seq, p)[i], static_cast<float>(l * 100000 + tag * 10000 + p * 100 + i))
            << "seq " << seq << " pos " << p;
        ASSERT_EQ(kv.v_at(l, seq, p)[i], -static_cast<float>(l * 100000 + tag * 10000 + p * 100 + i));
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

// --- prefix caching ---

// Reserves and fills positions [length, to) of `seq` with `tag`'s values, then commits: what a
// forward would do.
void write(kv_cache& kv, int32_t seq, int32_t to, int32_t tag) {
  const int32_t from = kv.length(seq);
  ASSERT_EQ(kv.reserve(seq, to), kv_status::ok);
  fill(kv, seq, from, to, tag);
  kv.commit(seq, to);
}

std::vector<int32_t> iota_tokens(int32_t n, int32_t first = 100) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), first);
  return t;
}

// A sequence holding `tokens` (written with tag `tag`) and its full blocks published.
int32_t published_sequence(kv_cache& kv, const std::vector<int32_t>& tokens, int32_t tag) {
  const int32_t s = *kv.open_sequence();
  write(kv, s, static_cast<int32_t>(tokens.size()), tag);
  kv.cache_prefix(s, tokens);
  return s;
}

TEST(KvPrefixCache, AttachSharesPublishedBlocksAndCountsReferences) {
  kv_cache kv(small_params());
  const auto tokens = iota_tokens(10);  // blocks [100..103] [104..107], 2 positions in a third
  const int32_t a = published_sequence(kv, tokens, 1);
  EXPECT_EQ(kv.prefix_stats().cached_blocks, 2);  // only full blocks
  EXPECT_EQ(kv.free_blocks(), 5);

  std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + 8);
  prompt.insert(prompt.end(), {7, 8, 9});  // same 8 tokens, then its own
  const int32_t b = *kv.open_sequence();
  EXPECT_EQ(kv.attach_prefix(b, prompt), 8);
  EXPECT_EQ(kv.length(b), 8);
  EXPECT_EQ(kv.capacity(b), 8);
  EXPECT_EQ(kv.block_table(b)[0], kv.block_table(a)[0]);
  EXPECT_EQ(kv.block_table(b)[1], kv.block_table(a)[1]);
  EXPECT_EQ(kv.blocks().refs(kv.block_table(a)[0]), 2);
  EXPECT_EQ(kv.prefix_stats().shared_refs, 2);
  EXPECT_EQ(kv.free_blocks(), 5);            // sharing takes no block
  expect_filled(kv, b, 0, 8, /*tag=*/1);     // a's K/V, read through b's table
  write(kv, b, 11, 2);                       // b's own positions go to a block of its own
  EXPECT_NE(kv.block_table(b)[2], kv.block_table(a)[2]);
  expect_filled(kv, a, 0, 10, 1);
  const prefix_cache_stats& st = kv.prefix_stats();
  EXPECT_EQ(st.queries, 1);
  EXPECT_EQ(st.hits, 1);
  EXPECT_EQ(st.query_tokens, 11);
  EXPECT_EQ(st.hit_tokens, 8);
  kv.free_sequence(a);
  EXPECT_EQ(kv.blocks().refs(kv.block_table(b)[0]), 1);  // b still holds the shared blocks
  EXPECT_EQ(kv.prefix_stats().shared_refs, 0);
  expect_filled(kv, b, 0, 8, 1);
}

TEST(KvPrefixCache, TheBlockHoldingTheLastTokenIsNeverAttached) {
  kv_cache kv(small_params());
  const auto tokens = iota_tokens(12);
  published_sequence(kv, tokens, 1);  // 3 full blocks published
  const int32_t b = *kv.open_sequence();
  EXPECT_EQ(kv.attach_prefix(b, tokens), 8);  // the third block holds the last token
  const int32_t c = *kv.open_sequence();
  EXPECT_EQ(kv.attach_prefix(c, std::vector<int32_t>(tokens.begin(), tokens.begin() + 4)), 0);
  EXPECT_EQ(kv.prefix_stats().hits, 1);
}

TEST(KvPrefixCache, KeysCoverEveryTokenAndTheWholeChain) {
  kv_cache kv(small_params());
  const auto tokens = iota_tokens(13);
  published_sequence(kv, tokens, 1);
  auto attach = [&](std::vector<int32_t> t) {
    const int32_t s = *kv.open_sequence();
    const int32_t n = kv.attach_prefix(s, t);
    kv.free_sequence(s);
    return n;
  };
  EXPECT_EQ(attach(tokens), 12);
  auto t = tokens;
  t[6] = 5;  // the second block differs: only the first is shared
  EXPECT_EQ(attach(t), 4);
  t = tokens;
  t[0] = 5;  // the first differs: the later blocks' keys chain from it, so nothing matches
  EXPECT_EQ(attach(t), 0);
  t = tokens;
  t[11] = 5;  // the last full block differs
  EXPECT_EQ(attach(t), 8);
  // The same block tokens after another first block: same hash input for block 1 but another
  // parent, so block 1 is not reachable.
  auto u = iota_tokens(13, 500);
  std::copy(tokens.begin() + 4, tokens.end(), u.begin() + 4);
  EXPECT_EQ(attach(u), 0);
}

TEST(KvPrefixCache, FreedBlocksStayCachedAndCountAsFree) {
  kv_cache kv(small_params());
  const int32_t a = published_sequence(kv, iota_tokens(9), 1);
  kv.free_sequence(a);
  EXPECT_EQ(kv.free_blocks(), 8);  // 6 free + 2 evictable
  EXPECT_EQ(kv.prefix_stats().evictable_blocks, 2);
  EXPECT_EQ(kv.prefix_stats().cached_blocks, 2);
  const int32_t b = *kv.open_sequence();
  EXPECT_EQ(kv.attach_prefix(b, iota_tokens(9)), 8);  // reclaimed from the LRU, not recomputed
  expect_filled(kv, b, 0, 8, 1);
  EXPECT_EQ(kv.prefix_stats().evictable_blocks, 0);
  EXPECT_EQ(kv.free_blocks(), 6);
}

TEST(KvPrefixCache, EvictionOnlyWhenTheFreeListIsEmptyTailFirstOldestFirst) {
  kv_cache kv(small_params());
  const auto ta = iota_tokens(9, 100), tb = iota_tokens(9, 200);
  const int32_t a = published_sequence(kv, ta, 1);  // blocks a0 a1 (+ a private third)
  const int32_t b = published_sequence(kv, tb, 2);  // blocks b0 b1 (+ a private third)
  kv.free_sequence(a);                              // released first: older
  kv.free_sequence(b);
  ASSERT_EQ(kv.prefix_stats().evictable_blocks, 4);
  ASSERT_EQ(kv.free_blocks(), 8);
  // 4 truly free blocks go first: nothing is evicted.
  const int32_t c = *kv.open_sequence();
  write(kv, c, 16, 3);
  EXPECT_EQ(kv.prefix_stats().evictions, 0);
  EXPECT_EQ(kv.prefix_stats().cached_blocks, 4);
  // The next block evicts a's tail (a1): a was released first, and a sequence's tail before
  // its head.
  const int32_t d = *kv.open_sequence();
  write(kv, d, 4, 4);
  EXPECT_EQ(kv.prefix_stats().evictions, 1);
  auto attach = [&](const std::vector<int32_t>& t) {
    const int32_t s = *kv.open_sequence();
    const int32_t n = kv.attach_prefix(s, t);
    kv.free_sequence(s);
    return n;
  };
  EXPECT_EQ(attach(ta), 4);  // a0 left
  EXPECT_EQ(attach(tb), 8);  // b untouched
  // Each attach released its blocks again, at the back, tail first: the LRU is now a0, b1, b0.
  write(kv, d, 8, 4);
  EXPECT_EQ(attach(ta), 0);
  EXPECT_EQ(attach(tb), 8);
  write(kv, d, 12, 4);
  EXPECT_EQ(attach(tb), 4);  // b1 went before b0
  EXPECT_EQ(kv.prefix_stats().evictions, 3);
  EXPECT_EQ(kv.prefix_stats().cached_blocks, 1);
}

TEST(KvPrefixCache, OutOfBlocksWhenEveryBlockIsHeldChangesNothing) {
  kv_cache kv(small_params());
  const auto t = iota_tokens(9);
  const int32_t a = published_sequence(kv, t, 1);  // 3 blocks
  const int32_t b = *kv.open_sequence();
  ASSERT_EQ(kv.attach_prefix(b, t), 8);               // shares 2, holds nothing new
  const int32_t c = *kv.open_sequence();
  write(kv, c, 20, 2);                                // 5 blocks: the pool is full
  EXPECT_EQ(kv.free_blocks(), 0);
  EXPECT_EQ(kv.blocks_needed(b, 9), 1);
  EXPECT_EQ(kv.reserve(b, 9), kv_status::out_of_blocks);  // held cached blocks are not evictable
  EXPECT_EQ(kv.capacity(b), 8);
  EXPECT_EQ(kv.prefix_stats().cached_blocks, 2);
  kv.free_sequence(c);
  EXPECT_EQ(kv.reserve(b, 9), kv_status::ok);
  expect_filled(kv, a, 0, 9, 1);
}

TEST(KvPrefixCache, TruncateIntoASharedBlockCopiesOnWrite) {
  kv_cache kv(small_params());
  const auto t = iota_tokens(9);
  const int32_t a = published_sequence(kv, t, 1);
  const int32_t b = *kv.open_sequence();
  ASSERT_EQ(kv.attach_prefix(b, t), 8);
  const int32_t shared = kv.block_table(b)[1];
  kv.truncate(b, 6);                       // into block 1, which a holds too
  EXPECT_EQ(kv.block_table(b)[1], shared); // O(1): nothing moves yet
  EXPECT_EQ(kv.blocks_needed(b, 8), 1);    // the copy
  EXPECT_EQ(kv.blocks_needed(b, 6), 0);    // nothing to write, nothing to copy
  write(kv, b, 8, 2);                      // positions 6, 7 of b
  EXPECT_NE(kv.block_table(b)[1], shared);
  EXPECT_EQ(kv.blocks().refs(shared), 1);
  EXPECT_EQ(kv.prefix_stats().shared_refs, 1);  // block 0 is still shared
  expect_filled(kv, b, 0, 6, 1);                // the copy kept positions 4, 5
  expect_filled(kv, b, 6, 8, 2);
  expect_filled(kv, a, 0, 9, 1);                // a never sees b's writes
  // The published block still serves new prompts.
  const int32_t c = *kv.open_sequence();
  EXPECT_EQ(kv.attach_prefix(c, t), 8);
  expect_filled(kv, c, 0, 8, 1);
}

TEST(KvPrefixCache, TruncateBelowASharedBlockDropsIt) {
  kv_cache kv(small_params());
  const auto t = iota_tokens(9);
  const int32_t a = published_sequence(kv, t, 1);
  const int32_t b = *kv.open_sequence();
  ASSERT_EQ(kv.attach_prefix(b, t), 8);
  kv.truncate(b, 4);                 // block 1 lies wholly past the new length
  EXPECT_EQ(kv.capacity(b), 4);
  EXPECT_EQ(kv.blocks_needed(b, 8), 1);
  write(kv, b, 8, 2);
  expect_filled(kv, b, 0, 4, 1);
  expect_filled(kv, b, 4, 8, 2);
  expect_filled(kv, a, 0, 9, 1);
  kv.truncate(b, 0);
  EXPECT_EQ(kv.capacity(b), 0);      // block 0 is published: it leaves too
  write(kv, b, 3, 3);
  expect_filled(kv, a, 0, 9, 1);
}

TEST(KvPrefixCache, TruncateIntoOwnPublishedBlockUnpublishesIt) {
  kv_cache kv(small_params());
  const auto t = iota_tokens(9);
  const int32_t a = published_sequence(kv, t, 1);
  const int32_t free_before = kv.free_blocks();
  kv.truncate(a, 6);  // block 1 is published and only a holds it
  EXPECT_EQ(kv.prefix_stats().cached_blocks, 1);
  EXPECT_EQ(kv.blocks_needed(a, 8), 0);  // written in place, no copy
  write(kv, a, 8, 2);
  EXPECT_EQ(kv.free_blocks(), free_before);
  const int32_t b = *kv.open_sequence();
  EXPECT_EQ(kv.attach_prefix(b, t), 4);  // block 1's old tokens are no longer cached
  // Re-publishing a's new contents chains from block 0 again.
  std::vector<int32_t> now = t;
  now[6] = 1;
  now[7] = 2;
  kv.cache_prefix(a, now);
  const int32_t c = *kv.open_sequence();
  EXPECT_EQ(kv.attach_prefix(c, now), 8);
}

TEST(KvPrefixCache, DuplicateBlocksStayPrivateAndTheChainGoesOn) {
  kv_cache kv(small_params());
  const auto t = iota_tokens(13);
  published_sequence(kv, std::vector<int32_t>(t.begin(), t.begin() + 9), 1);  // 2 blocks
  const int32_t b = published_sequence(kv, t, 2);  // computed the same 8 tokens itself + 1 block
  EXPECT_EQ(kv.prefix_stats().cached_blocks, 3);   // b's first two were duplicates
  EXPECT_FALSE(kv.blocks().is_published(kv.block_table(b)[0]));
  EXPECT_TRUE(kv.blocks().is_published(kv.block_table(b)[2]));
  const int32_t c = *kv.open_sequence();
  EXPECT_EQ(kv.attach_prefix(c, t), 12);  // the first sequence's two blocks, then b's third
  expect_filled(kv, c, 0, 8, 1);
  expect_filled(kv, c, 8, 12, 2);
}

TEST(KvPrefixCache, CachePrefixIsIncrementalAndBoundedByTheLength) {
  kv_cache kv(small_params());
  const auto t = iota_tokens(16);
  const int32_t a = *kv.open_sequence();
  write(kv, a, 6, 1);
  kv.cache_prefix(a, t);  // only 6 positions hold K/V: one full block
  EXPECT_EQ(kv.prefix_stats().cached_blocks, 1);
  write(kv, a, 16, 1);
  kv.cache_prefix(a, std::vector<int32_t>(t.begin(), t.begin() + 10));  // tokens bound it too
  EXPECT_EQ(kv.prefix_stats().cached_blocks, 2);
  kv.cache_prefix(a, t);
  EXPECT_EQ(kv.prefix_stats().cached_blocks, 4);
  kv.cache_prefix(a, t);  // nothing new
  EXPECT_EQ(kv.prefix_stats().cached_blocks, 4);
}

TEST(KvPrefixCache, BadCallsThrow) {
  kv_cache kv(small_params());
  const int32_t a = *kv.open_sequence();
  write(kv, a, 3, 1);
  EXPECT_THROW(kv.attach_prefix(a, iota_tokens(9)), invalid_argument_error);  // not fresh
  EXPECT_THROW(kv.attach_prefix(3, iota_tokens(9)), invalid_argument_error);  // not open
  EXPECT_THROW(kv.cache_prefix(3, iota_tokens(9)), invalid_argument_error);
  const int32_t b = *kv.open_sequence();
  EXPECT_EQ(kv.attach_prefix(b, {}), 0);
}

}  // namespace
}  // namespace dspark

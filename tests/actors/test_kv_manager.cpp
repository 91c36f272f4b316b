// kv_manager and scheduler: worst-case reservations, refusal without partial state, release,
// FIFO admission that a too-large head blocks.
#include <gtest/gtest.h>

#include "actors/kv_manager.h"
#include "actors/scheduler.h"
#include "common/error.h"

namespace dspark::actors {
namespace {

TEST(KvManager, ReservesWorstCaseAndReleases) {
  kv_manager kv({10, 16, 256, 5});
  EXPECT_EQ(kv.blocks_for(10, 20), 3);    // 10 + 20 + 5 = 35 positions -> 3 blocks of 16
  EXPECT_EQ(kv.blocks_for(200, 500), 16); // capped at n_ctx = 256 -> 16 blocks
  EXPECT_TRUE(kv.try_admit(1, 10, 20));
  EXPECT_EQ(kv.used_blocks(), 3);
  EXPECT_TRUE(kv.try_admit(2, 50, 40));   // 95 -> 6 blocks, 9 used
  EXPECT_FALSE(kv.try_admit(3, 10, 20));  // 3 more do not fit: refused, nothing reserved
  EXPECT_EQ(kv.used_blocks(), 9);
  EXPECT_THROW(kv.try_admit(1, 1, 1), invalid_argument_error);
  kv.release(2);
  EXPECT_EQ(kv.used_blocks(), 3);
  EXPECT_TRUE(kv.try_admit(3, 10, 20));
  kv.release(1);
  kv.release(3);
  kv.release(3);  // twice: ignored
  EXPECT_EQ(kv.used_blocks(), 0);
  EXPECT_EQ(kv.free_blocks(), 10);
  EXPECT_THROW(kv_manager({0, 16, 256, 1}), invalid_argument_error);
}

TEST(KvManager, SharedCreditCountsSharedBlocksOnce) {
  kv_manager kv({10, 16, 256, 0});
  EXPECT_TRUE(kv.try_admit(1, 64, 32));   // 6 blocks
  EXPECT_FALSE(kv.try_admit(2, 64, 32));  // 12 > 10
  kv.set_shared_credit(2);                // request 1's sequence and a sibling share 2 blocks
  EXPECT_EQ(kv.free_blocks(), 6);
  EXPECT_TRUE(kv.try_admit(2, 64, 32));   // 12 <= 10 + 2
  EXPECT_EQ(kv.used_blocks(), 12);
  EXPECT_EQ(kv.free_blocks(), 0);
  EXPECT_FALSE(kv.try_admit(3, 1, 1));
  kv.set_shared_credit(0);                // the sharing ended with request 1 ...
  kv.release(1);                          // ... which releases its whole reservation
  EXPECT_EQ(kv.free_blocks(), 4);
  EXPECT_THROW(kv.set_shared_credit(-1), invalid_argument_error);
}

waiting_request req(uint64_t id, int32_t prompt, int32_t max_tokens) {
  waiting_request w;
  w.peer = std::string(1, 'p');  // (not = "p": a GCC 12 -Wrestrict false positive)
  w.id = id;
  w.req.key = id;
  w.req.prompt.assign(static_cast<size_t>(prompt), 1);
  w.req.params.max_tokens = max_tokens;
  return w;
}

TEST(Scheduler, AdmitsInOrderWhileSlotsAndBlocksLast) {
  kv_manager kv({8, 16, 1024, 0});
  scheduler s(kv.params(), 1024);
  EXPECT_EQ(s.enqueue(req(1, 16, 16)), queue_verdict::queued);  // 2 blocks
  EXPECT_EQ(s.enqueue(req(2, 64, 64)), queue_verdict::queued);  // 8 blocks: does not fit after 1
  EXPECT_EQ(s.enqueue(req(3, 8, 8)), queue_verdict::queued);    // 1 block: fits, but waits behind 2 (FIFO)
  EXPECT_EQ(s.enqueue(req(9, 100, 100)), queue_verdict::too_large);  // 13 blocks > the whole budget
  std::vector<waiting_request> out;
  s.admit(4, kv, out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].id, 1u);
  EXPECT_EQ(s.queued(), 2);
  kv.release(1);
  out.clear();
  s.admit(4, kv, out);
  ASSERT_EQ(out.size(), 1u);  // 2 takes all 8 blocks
  EXPECT_EQ(out[0].id, 2u);
  kv.release(2);
  out.clear();
  s.admit(0, kv, out);  // no free slot: nothing
  EXPECT_TRUE(out.empty());
  waiting_request got;
  EXPECT_TRUE(s.remove("p", 3, &got));
  EXPECT_EQ(got.id, 3u);
  EXPECT_FALSE(s.remove("p", 3, nullptr));
  s.enqueue(req(4, 1, 1));
  s.enqueue(req(5, 1, 1));
  EXPECT_EQ(s.remove_peer("p"), 2);
  EXPECT_EQ(s.queued(), 0);
}

TEST(Scheduler, QueueLimitAndTheSplitAdmission) {
  kv_manager kv({8, 16, 1024, 0});
  scheduler s(kv.params(), 2);
  EXPECT_EQ(s.enqueue(req(1, 16, 16)), queue_verdict::queued);
  EXPECT_EQ(s.enqueue(req(2, 16, 16)), queue_verdict::queued);
  EXPECT_EQ(s.enqueue(req(3, 16, 16)), queue_verdict::overloaded);  // max_waiting 2
  EXPECT_EQ(s.queued(), 2);
  std::vector<kv_ask> asks;
  s.heads(5, asks);  // at most what waits
  ASSERT_EQ(asks.size(), 2u);
  EXPECT_EQ(asks[0].id, 1u);
  EXPECT_EQ(asks[0].prompt_len, 16);
  EXPECT_EQ(asks[0].max_tokens, 16);
  kv.set_shared_credit(1);
  EXPECT_EQ(kv.reserve_prefix(asks), 2);  // 2 + 2 blocks
  EXPECT_EQ(kv.shared_blocks(), 1);
  std::vector<waiting_request> out;
  s.pop(2, out);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].id, 2u);
  EXPECT_TRUE(s.remove(0) == false);
  kv.release(1);
  EXPECT_EQ(kv.shared_blocks(), 1);
  kv.release(2);  // the last reservation: nothing is shared any more
  EXPECT_EQ(kv.shared_blocks(), 0);
  EXPECT_EQ(kv.used_blocks(), 0);
  EXPECT_THROW(scheduler(kv.params(), 0), invalid_argument_error);
}

}  // namespace
}  // namespace dspark::actors

// thread_pool: every index covered exactly once, chunk sizes per the contract, valid thread
// indices, many back-to-back dispatches (the decode pattern) without loss or deadlock, and a
// body that is called by reference, never copied (so a dispatch allocates nothing).
#include <gtest/gtest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>
#include <vector>

#include "kernels/cpu/function_ref.h"
#include "kernels/cpu/thread_pool.h"

namespace dspark {
namespace {

TEST(KernelsThreadPool, CoversEveryIndexOnceWithGrainSizedChunks) {
  for (int n_threads : {1, 2, 3, 5}) {
    thread_pool pool(n_threads);
    EXPECT_EQ(pool.n_threads(), n_threads);
    for (int64_t n : {0, 1, 7, 64, 1000, 4097}) {
      for (int64_t grain : {1, 4, 16, 5000}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::mutex m;
        std::vector<std::pair<int64_t, int64_t>> chunks;
        std::atomic<bool> bad_index{false};
        pool.parallel_for(n, grain, [&](int64_t b, int64_t e, int ti) {
          if (ti < 0 || ti >= n_threads) bad_index = true;
          for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
          std::lock_guard<std::mutex> lock(m);
          chunks.emplace_back(b, e);
        });
        EXPECT_FALSE(bad_index);
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
        for (auto [b, e] : chunks) {
          EXPECT_LT(b, e);
          if (e != n) {
            EXPECT_GE(e - b, grain) << "n=" << n << " grain=" << grain;
          }
        }
      }
    }
  }
}

TEST(KernelsThreadPool, ManyBackToBackDispatches) {
  thread_pool pool(3);
  std::atomic<int64_t> total{0};
  for (int it = 0; it < 3000; ++it) {
    pool.parallel_for(96, 8, [&](int64_t b, int64_t e, int) { total.fetch_add(e - b); });
  }
  EXPECT_EQ(total.load(), 3000 * 96);
}

TEST(KernelsThreadPool, WakesSleepingWorkers) {
  thread_pool pool(2);
  std::atomic<int64_t> total{0};
  for (int it = 0; it < 3; ++it) {
    // Long enough for the workers to stop spinning and sleep.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    pool.parallel_for(1000, 1, [&](int64_t b, int64_t e, int) { total.fetch_add(e - b); });
  }
  EXPECT_EQ(total.load(), 3000);
}

// The caller's chunk waits for a worker's chunk: passes only if workers really take part
// (twice: once with workers spinning, once after they went to sleep).
TEST(KernelsThreadPool, WorkersParticipate) {
  // Two chunks; whichever chunk the caller (thread 0) claims, it blocks there until a worker has
  // run, so the other chunk can only be done by a worker. Which chunk each side gets is a race
  // and does not matter. Round 1 starts after the workers have gone to sleep.
  thread_pool pool(2);
  for (int round = 0; round < 2; ++round) {
    if (round == 1) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::atomic<bool> worker_ran{false};
    pool.parallel_for(2, 1, [&](int64_t, int64_t, int ti) {
      if (ti != 0) {
        worker_ran = true;
        return;
      }
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!worker_ran && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    });
    EXPECT_TRUE(worker_ran) << "round " << round;
  }
}

// Counts copies and moves of itself. A lambda capturing one by value is copied exactly when
// the lambda is; std::function would copy it into its own storage (on the heap for the large
// captures the kernels use), function_ref must not.
struct copy_counter {
  static inline std::atomic<int> copies{0};
  copy_counter() = default;
  copy_counter(const copy_counter&) { copies.fetch_add(1); }
  copy_counter(copy_counter&&) noexcept { copies.fetch_add(1); }
  copy_counter& operator=(const copy_counter&) = delete;
  copy_counter& operator=(copy_counter&&) = delete;
};

TEST(KernelsThreadPool, BodyIsCalledByReferenceNeverCopied) {
  for (int n_threads : {1, 3}) {
    thread_pool pool(n_threads);
    std::atomic<int64_t> total{0};
    const copy_counter counter;
    // Large capture on purpose: well beyond std::function's small-buffer size.
    std::array<int64_t, 16> pad{};
    auto body = [counter, pad, &total](int64_t b, int64_t e, int) {
      (void)counter;
      total.fetch_add(e - b + pad[0]);
    };
    copy_counter::copies = 0;
    for (int it = 0; it < 100; ++it) pool.parallel_for(1000, 7, body);  // an lvalue
    pool.parallel_for(1000, 7, std::move(body));                          // and an rvalue
    EXPECT_EQ(copy_counter::copies.load(), 0) << n_threads << " threads";
    EXPECT_EQ(total.load(), 101 * 1000);
  }
}

TEST(KernelsThreadPool, FunctionRefCallsTheOriginalObject) {
  int calls = 0;
  auto f = [&calls](int64_t b, int64_t e, int) mutable { calls += static_cast<int>(e - b); };
  const function_ref<void(int64_t, int64_t, int)> r = f;
  r(0, 3, 0);
  r(3, 5, 0);
  EXPECT_EQ(calls, 5);
  // Two words, whatever the callable's size: nothing is stored inline or on the heap.
  EXPECT_EQ(sizeof(r), 2 * sizeof(void*));
}

TEST(KernelsThreadPool, RejectsBadThreadCount) {
  EXPECT_THROW(thread_pool(0), std::exception);
}

}  // namespace
}  // namespace dspark

// thread_pool: spin-then-sleep workers driven by an atomic generation counter.
//
// Dispatch protocol (one parallel_for at a time, see thread_pool.h):
//   caller: publish the job (fn, chunking), reset the chunk cursor, set `pending` to the number
//           of workers, then bump `generation` (release). Wake sleepers only if any exist.
//   worker: spins on `generation` for a short while (decode issues a job every few
//           microseconds, so a worker that just finished is almost always still spinning when
//           the next job arrives), then sleeps on a condition variable.
//   everyone (caller included) grabs chunks from an atomic cursor until none are left, so a
//   worker that is slow to wake (descheduled, asleep) costs balance, not correctness.
//   caller: returns once `pending` reaches 0, i.e. every worker has left the job, so `fn` (a
//           reference to the caller's object) is never touched after parallel_for returns.
#include "kernels/cpu/thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define DSPARK_CPU_RELAX() _mm_pause()
#else
#define DSPARK_CPU_RELAX() std::this_thread::yield()
#endif

#include "common/error.h"

namespace dspark {

namespace {
// How long an idle worker spins before sleeping. Long enough to bridge the gap between the
// small ops of one decode step, short enough not to burn a core between requests.
constexpr auto kSpinTime = std::chrono::microseconds(200);
// Chunks per thread: a few, so early finishers can pick up a late starter's share.
constexpr int64_t kChunksPerThread = 4;

using job_fn = std::function<void(int64_t, int64_t, int)>;
}  // namespace

struct thread_pool::impl {
  int n_threads = 1;
  std::vector<std::thread> workers;

  // Current job, written by the caller before `generation` is bumped.
  const job_fn* fn = nullptr;
  int64_t n = 0;
  int64_t chunk = 1;     // elements per chunk, a multiple of grain
  int64_t n_chunks = 0;

  alignas(64) std::atomic<int64_t> next_chunk{0};
  alignas(64) std::atomic<uint64_t> generation{0};
  alignas(64) std::atomic<int> pending{0};
  alignas(64) std::atomic<int> sleepers{0};
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::condition_variable wake;

  // Takes chunks from the shared cursor until the job is exhausted.
  void run_chunks(int thread_index) {
    for (;;) {
      const int64_t c = next_chunk.fetch_add(1, std::memory_order_relaxed);
      if (c >= n_chunks) return;
      const int64_t begin = c * chunk;
      const int64_t end = std::min(n, begin + chunk);
      (*fn)(begin, end, thread_index);
    }
  }

  void worker_loop(int thread_index) {
    uint64_t seen = 0;
    for (;;) {
      // Spin, checking the clock only every 64 polls (the clock read costs ~20 ns).
      uint64_t g = generation.load(std::memory_order_acquire);
      if (g == seen && !stop.load(std::memory_order_relaxed)) {
        const auto deadline = std::chrono::steady_clock::now() + kSpinTime;
        for (int i = 0;; ++i) {
          DSPARK_CPU_RELAX();
          g = generation.load(std::memory_order_acquire);
          if (g != seen || stop.load(std::memory_order_relaxed)) break;
          if ((i & 63) == 63 && std::chrono::steady_clock::now() > deadline) break;
        }
      }
      if (g == seen && !stop.load(std::memory_order_relaxed)) {
        // Sleep. sleepers is raised under the mutex before the generation is re-checked, and
        // the caller reads sleepers (seq_cst) after bumping the generation, so either we see
        // the new generation here or the caller sees us and notifies under the mutex.
        std::unique_lock<std::mutex> lock(mutex);
        sleepers.fetch_add(1, std::memory_order_seq_cst);
        wake.wait(lock, [&] {
          return generation.load(std::memory_order_seq_cst) != seen ||
                 stop.load(std::memory_order_relaxed);
        });
        sleepers.fetch_sub(1, std::memory_order_relaxed);
        g = generation.load(std::memory_order_acquire);
      }
      if (stop.load(std::memory_order_acquire)) return;
      seen = g;
      run_chunks(thread_index);
      pending.fetch_sub(1, std::memory_order_release);
    }
  }
};

thread_pool::thread_pool(int n_threads) : impl_(new impl) {
  if (n_threads < 1 || n_threads > 1024) {
    delete impl_;
    throw invalid_argument_error("thread_pool: n_threads must be in [1, 1024], got " +
                                 std::to_string(n_threads));
  }
  impl_->n_threads = n_threads;
  impl_->workers.reserve(n_threads - 1);
  for (int i = 1; i < n_threads; ++i) {
    impl_->workers.emplace_back([this, i] { impl_->worker_loop(i); });
  }
}

thread_pool::~thread_pool() {
  {
    std::lock_guard<std::mutex> lock(impl_->mutex);
    impl_->stop.store(true, std::memory_order_seq_cst);
  }
  impl_->wake.notify_all();
  for (auto& t : impl_->workers) t.join();
  delete impl_;
}

int thread_pool::n_threads() const { return impl_->n_threads; }

void thread_pool::parallel_for(int64_t n, int64_t grain, const job_fn& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t units = (n + grain - 1) / grain;
  impl& p = *impl_;
  if (p.n_threads == 1 || units == 1) {
    fn(0, n, 0);
    return;
  }
  // Split the grain-units into up to kChunksPerThread chunks per thread, each a whole number
  // of grains, so only the final chunk may be shorter than `grain`.
  const int64_t n_chunks = std::min<int64_t>(units, p.n_threads * kChunksPerThread);
  const int64_t units_per_chunk = (units + n_chunks - 1) / n_chunks;
  p.fn = &fn;
  p.n = n;
  p.chunk = units_per_chunk * grain;
  p.n_chunks = (n + p.chunk - 1) / p.chunk;
  p.next_chunk.store(0, std::memory_order_relaxed);
  p.pending.store(p.n_threads - 1, std::memory_order_relaxed);
  p.generation.fetch_add(1, std::memory_order_seq_cst);
  if (p.sleepers.load(std::memory_order_seq_cst) > 0) {
    { std::lock_guard<std::mutex> lock(p.mutex); }
    p.wake.notify_all();
  }
  p.run_chunks(0);
  // Wait for the workers to leave the job; they are normally microseconds behind.
  for (int i = 0; p.pending.load(std::memory_order_acquire) != 0; ++i) {
    if (i < 4096) {
      DSPARK_CPU_RELAX();
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace dspark

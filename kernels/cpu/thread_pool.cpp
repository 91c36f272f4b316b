// thread_pool: spin-then-sleep workers driven by an atomic generation counter.
//
// Dispatch protocol (one parallel_for at a time, see thread_pool.h):
//   caller: publishes the job (fn, n, chunk size) and a fresh chunk cursor, then bumps
//           `generation` (release) and wakes sleepers only if any exist.
//   worker: spins on `generation` for a short while (decode issues a job every few
//           microseconds, so a worker that just finished is almost always still spinning when
//           the next job arrives), then sleeps on a condition variable.
//   everyone (caller included) claims chunks from the cursor until none are left.
//   caller: returns once every chunk is *done* (not once every worker has checked in), so a
//           worker that is slow to wake, descheduled or asleep costs nothing: the caller simply
//           runs its share. This matters on small, shared machines where threads outnumber
//           free cores.
//
// The cursor packs [generation:32][n_chunks:16][next:16] in one 64-bit word and is advanced
// by compare-and-swap, so a late worker still holding an old generation can never claim a
// chunk of a newer job: its CAS sees a different generation and gives up. A worker reads the
// job's fields only after claiming a chunk, and the caller cannot return (and overwrite them)
// until that chunk is done.
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

using job_fn = function_ref<void(int64_t, int64_t, int)>;
}  // namespace

struct thread_pool::impl {
  int n_threads = 1;
  std::vector<std::thread> workers;

  // Current job, written by the caller before `generation` is bumped.
  const job_fn* fn = nullptr;  // the caller's parallel_for argument, alive until it returns
  int64_t n = 0;
  int64_t chunk = 1;  // elements per chunk, a multiple of grain

  alignas(64) std::atomic<uint64_t> cursor{0};
  alignas(64) std::atomic<int64_t> done{0};
  alignas(64) std::atomic<uint64_t> generation{0};
  alignas(64) std::atomic<int> sleepers{0};
  std::atomic<bool> stop{false};
  std::mutex mutex;
  std::condition_variable wake;

  static uint64_t pack(uint64_t gen, uint64_t n_chunks, uint64_t next) {
    return (gen << 32) | (n_chunks << 16) | next;
  }

  // Claims and runs chunks of job `gen` until none are left (or a newer job replaced it).
  void run_chunks(uint64_t gen, int thread_index) {
    uint64_t c = cursor.load(std::memory_order_acquire);
    for (;;) {
      const uint64_t next = c & 0xFFFF, n_chunks = (c >> 16) & 0xFFFF;
      if ((c >> 32) != (gen & 0xFFFFFFFFu) || next >= n_chunks) return;
      if (!cursor.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel,
                                        std::memory_order_acquire)) {
        continue;  // c reloaded
      }
      const int64_t begin = static_cast<int64_t>(next) * chunk;
      const int64_t end = std::min(n, begin + chunk);
      (*fn)(begin, end, thread_index);
      done.fetch_add(1, std::memory_order_release);
      c = cursor.load(std::memory_order_acquire);
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
      run_chunks(g, thread_index);
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

void thread_pool::parallel_for(int64_t n, int64_t grain, job_fn fn) {
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
  const int64_t n_chunks = std::min<int64_t>(units, p.n_threads * kChunksPerThread);  // < 2^16
  const int64_t units_per_chunk = (units + n_chunks - 1) / n_chunks;
  const uint64_t gen = p.generation.load(std::memory_order_relaxed) + 1;
  p.fn = &fn;
  p.n = n;
  p.chunk = units_per_chunk * grain;
  const int64_t chunks = (n + p.chunk - 1) / p.chunk;
  p.done.store(0, std::memory_order_relaxed);
  p.cursor.store(impl::pack(gen & 0xFFFFFFFFu, static_cast<uint64_t>(chunks), 0),
                 std::memory_order_release);
  p.generation.store(gen, std::memory_order_seq_cst);
  if (p.sleepers.load(std::memory_order_seq_cst) > 0) {
    { std::lock_guard<std::mutex> lock(p.mutex); }
    p.wake.notify_all();
  }
  p.run_chunks(gen, 0);
  // Wait for chunks other threads are still running; they are normally microseconds behind.
  for (int i = 0; p.done.load(std::memory_order_acquire) != chunks; ++i) {
    if (i < 1024) {
      DSPARK_CPU_RELAX();
    } else {
      std::this_thread::yield();
    }
  }
}

}  // namespace dspark

// A fixed pool of worker threads for data-parallel loops on the decode hot path.
//
// parallel_for is called a few hundred times per decoded token, so dispatch must cost
// microseconds: workers spin briefly on an atomic generation counter before sleeping, and the
// calling thread takes a share of the work itself. Not re-entrant: one parallel_for at a time.
// The body is taken as a function_ref, not a std::function, so a dispatch allocates nothing.
#pragma once

#include <cstdint>

#include "kernels/cpu/function_ref.h"

namespace dspark {

class thread_pool {
 public:
  // n_threads counts the calling thread: n_threads == 1 runs everything inline.
  explicit thread_pool(int n_threads);
  ~thread_pool();
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;

  int n_threads() const;

  // Calls fn(begin, end, thread_index) on disjoint chunks that together cover [0, n), and
  // returns when all are done. Chunks are contiguous and at least `grain` long (but the last).
  // fn is called by reference (never copied), from several threads at once.
  void parallel_for(int64_t n, int64_t grain,
                    function_ref<void(int64_t begin, int64_t end, int thread_index)> fn);

 private:
  struct impl;
  impl* impl_;
};

}  // namespace dspark

// CUDA graphs of repeated step shapes: the target's forward (engine/cuda/gpu_runner.h) and the
// drafters' rounds (models/drafters/cuda/gpu_drafter_context.h).
//
// A shape runs eagerly the first time it is seen (which also warms cuBLASLt's plans), is
// captured on its second sighting and is replayed from then on. Sightings are counted apart
// from the graphs, so shapes seen once (ragged verify steps make many) never hold a graph slot.
// When the cache is full, a graph not replayed for `stale_runs` runs gives its slot to the new
// shape: the cache follows the load (a new concurrency, a new draft length) without churning,
// since a graph in use is never evicted.
//
// Why: until 2026-12-07 (thirteenth session) every shape seen once kept a slot for good. Under
// load the cache filled with one-off shapes, after which no new shape was ever captured; the
// start-up step profile itself then ran eagerly, which made 2 and 3 rows cost more than 4
// (docs/benchmarks.md, thirteenth session).
//
// The hot path allocates nothing: sightings live in a fixed table (engine/shape_sightings.h),
// enqueue is a template argument (no std::function), and only a capture inserts into the map of
// graphs. A key type needs operator<=> and a shape_fingerprint(key) overload.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>

#include "engine/backend.h"
#include "engine/shape_sightings.h"
#include "kernels/cuda/cuda_check.h"

namespace dspark::cuda {

struct graph_cache_options {
  size_t max_graphs = 128;      // captured graphs held at once
  size_t sighting_slots = 4096;  // the sighting table's fixed size (engine/shape_sightings.h)
  int64_t stale_runs = 512;     // a graph not replayed for this many runs may be evicted
};

template <typename Key>
class graph_cache {
 public:
  explicit graph_cache(graph_cache_options o = {}) : opt_(o), sightings_(o.sighting_slots) {}
  ~graph_cache() {
    for (auto& [key, g] : graphs_) (void)cudaGraphExecDestroy(g.exec);
  }
  graph_cache(const graph_cache&) = delete;
  graph_cache& operator=(const graph_cache&) = delete;

  // Runs enqueue() (which must not synchronise) on `stream` for a step of shape `key`: replayed,
  // captured and launched, or eagerly.
  template <typename Enqueue>
  void run(const Key& key, cudaStream_t stream, Enqueue&& enqueue) {
    ++runs_;
    if (cudaGraphExec_t exec = find_or_capture(key, stream, enqueue)) {
      DSPARK_CUDA_CHECK(cudaGraphLaunch(exec, stream));
      return;
    }
    ++stats_.eager;
    enqueue();
  }

  // A step that is never graphed (too large, graphs off): counted as an eager run.
  template <typename Enqueue>
  void run_eagerly(Enqueue&& enqueue) {
    ++runs_;
    ++stats_.eager;
    enqueue();
  }

  graph_launch_stats stats() const {
    graph_launch_stats s = stats_;
    s.graphs = size();
    return s;
  }
  int32_t size() const { return static_cast<int32_t>(graphs_.size()); }

 private:
  struct entry {
    cudaGraphExec_t exec = nullptr;
    int64_t last_run = 0;  // runs_ at its last replay
  };

  template <typename Enqueue>
  cudaGraphExec_t find_or_capture(const Key& key, cudaStream_t stream, Enqueue& enqueue) {
    if (auto it = graphs_.find(key); it != graphs_.end()) {
      it->second.last_run = runs_;
      ++stats_.replayed;
      return it->second.exec;
    }
    if (!sightings_.seen_before(shape_fingerprint(key))) return nullptr;  // first sighting: eager
    if (graphs_.size() >= opt_.max_graphs && !evict_stale()) {
      ++stats_.eager_cache_full;
      return nullptr;
    }
    cudaGraph_t graph = nullptr;
    DSPARK_CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      enqueue();
    } catch (...) {
      (void)cudaStreamEndCapture(stream, &graph);
      if (graph != nullptr) (void)cudaGraphDestroy(graph);
      throw;
    }
    DSPARK_CUDA_CHECK(cudaStreamEndCapture(stream, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t e = cudaGraphInstantiate(&exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    DSPARK_CUDA_CHECK(e);
    graphs_.emplace(key, entry{exec, runs_});
    ++stats_.captured;
    return exec;
  }

  // Frees the least recently replayed graph if it is stale; false when every graph is in use.
  bool evict_stale() {
    if (graphs_.empty()) return false;
    auto oldest = std::min_element(graphs_.begin(), graphs_.end(),
                                   [](const auto& a, const auto& b) { return a.second.last_run < b.second.last_run; });
    if (runs_ - oldest->second.last_run < opt_.stale_runs) return false;
    (void)cudaGraphExecDestroy(oldest->second.exec);  // its last launch finished: callers sync every step
    graphs_.erase(oldest);
    return true;
  }

  graph_cache_options opt_;
  std::map<Key, entry> graphs_;
  shape_sightings sightings_;
  int64_t runs_ = 0;
  graph_launch_stats stats_;
};

}  // namespace dspark::cuda

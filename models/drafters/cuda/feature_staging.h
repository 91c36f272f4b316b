// Feature rows on their way into a GPU drafter: each committed position's captured target rows,
// concatenated over the capture layers, as the drafter's fc projection takes them
// ([n, n_layers * n_embd] f32 on the device, in rows the drafter owns). The GPU drafters
// (cuda_block_drafter.h, cuda_chain_drafter.h) queue rows with add() in on_commit and consume
// them with flush() when they next write their context.
//
// Rows come one of two ways:
//   - from the host (target_features::data: a CPU target, or a CUDA target that copied its
//     capture out): gathered into pinned staging here, uploaded by flush();
//   - from the target's device memory (target_features::device: a CUDA target on the drafter's
//     GPU, when reads_device_features is on): queued as row indices and gathered on the GPU by
//     one kernel per target forward, on the drafter's stream. The host never sees them (at 8B,
//     5 capture layers are 80 KB a row, copied out after every verify step otherwise). The
//     target rewrites its capture buffer with its next forward, so launch() runs from the
//     drafter's before_target_forward(), and the target's stream waits for the gather on the GPU
//     (an event, no host sync).
// One flush holds rows of one kind: fits() says when the other kind must flush first.
// Everything is allocated at construction; add / launch / flush allocate nothing.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/cuda/device_buffer.h"
#include "models/drafters/cuda/gpu_drafter_context.h"
#include "models/drafters/drafter.h"

namespace dspark {

// Whether the GPU drafters read the target's captured rows in device memory (caps()
// reads_device_features): DSPARK_DEVICE_FEATURES=1. Off by default until the path has been
// measured on the GPU against the host path (docs/benchmarks.md).
bool device_features_enabled();

class feature_staging {
 public:
  // rows: the drafter's device buffer [max_rows, n_layers * n_embd] f32; x: its context (stream,
  // device allocations).
  feature_staging(gpu_drafter_context& x, float* rows, int32_t max_rows, int32_t n_layers, int64_t n_embd);
  ~feature_staging();
  feature_staging(const feature_staging&) = delete;
  feature_staging& operator=(const feature_staging&) = delete;

  // Rows queued since the last flush.
  int32_t size() const { return n_; }
  // Whether a row of f can be queued now: not when full, nor when the queued rows came the
  // other way (host or device).
  bool fits(const target_features& f) const;
  // Queues row i of f (the caller checked fits and the shape) as row size().
  void add(const target_features& f, int32_t i);
  // Enqueues the gather of the device rows queued since the last launch and makes the target's
  // stream wait for it. Nothing to do without such rows.
  void launch();
  // Enqueues what makes rows [0, size()) of `rows` valid on the drafter's stream (the upload of
  // host rows, or the last gather), then starts over. Returns the rows flushed.
  int32_t flush();

 private:
  void wait_staging();  // the last flush's copies have read the pinned staging

  cudaStream_t stream_;
  float* rows_;
  int32_t max_rows_, n_layers_;
  int64_t n_embd_, width_;
  int32_t n_ = 0;         // queued rows
  int32_t launched_ = 0;  // of which gathered (device rows) so far
  bool from_device_ = false;
  // The forward the unlaunched device rows come from.
  const float* src_ = nullptr;
  int64_t src_layer_stride_ = 0;
  cudaStream_t target_stream_ = nullptr;
  cuda::pinned_buffer host_rows_;  // [max_rows, width] f32, host rows
  cuda::pinned_buffer host_idx_;   // [max_rows] int32 source row of each device row
  int32_t* dev_idx_ = nullptr;
  cudaEvent_t staged_ = nullptr;    // after the last flush's reads of the pinned staging
  cudaEvent_t gathered_ = nullptr;  // after the last gather
  bool staged_pending_ = false;
};

}  // namespace dspark

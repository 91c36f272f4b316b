// feature_staging: see feature_staging.h.
#include "models/drafters/cuda/feature_staging.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/drafter_ops.h"
#include "models/drafters/drafter_compute.h"

namespace dspark {

bool device_features_enabled() {
  // Read at each drafter's construction (not cached), so a test can build both kinds.
  const char* v = std::getenv("DSPARK_DEVICE_FEATURES");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

feature_staging::feature_staging(gpu_drafter_context& x, float* rows, int32_t max_rows, int32_t n_layers,
                                 int64_t n_embd)
    : stream_(x.stream()),
      rows_(rows),
      max_rows_(max_rows),
      n_layers_(n_layers),
      n_embd_(n_embd),
      width_(static_cast<int64_t>(n_layers) * n_embd) {
  host_rows_ = cuda::pinned_buffer(static_cast<size_t>(max_rows * width_) * sizeof(float));
  host_idx_ = cuda::pinned_buffer(static_cast<size_t>(max_rows) * sizeof(int32_t));
  dev_idx_ = static_cast<int32_t*>(x.alloc(static_cast<size_t>(max_rows) * sizeof(int32_t)));
  DSPARK_CUDA_CHECK(cudaEventCreateWithFlags(&staged_, cudaEventDisableTiming));
  DSPARK_CUDA_CHECK(cudaEventCreateWithFlags(&gathered_, cudaEventDisableTiming));
}

feature_staging::~feature_staging() {
  // The pinned staging may still be read by an enqueued copy.
  if (staged_pending_) (void)cudaEventSynchronize(staged_);
  (void)cudaEventDestroy(staged_);
  (void)cudaEventDestroy(gathered_);
}

bool feature_staging::fits(const target_features& f) const {
  return n_ < max_rows_ && (n_ == 0 || from_device_ == (f.device != nullptr));
}

void feature_staging::wait_staging() {
  if (!staged_pending_) return;
  DSPARK_CUDA_CHECK(cudaEventSynchronize(staged_));
  staged_pending_ = false;
}

void feature_staging::add(const target_features& f, int32_t i) {
  wait_staging();
  if (n_ == 0) from_device_ = f.device != nullptr;
  if (!from_device_) {
    gather_feature_row(f, i, host_rows_.as<float>() + n_ * width_);
    ++n_;
    return;
  }
  // Rows of one launch come from one forward's buffer; another buffer (never expected between
  // two before_target_forward calls) gets a launch of its own.
  if (launched_ < n_ && (f.device != src_ || f.device_layer_stride != src_layer_stride_)) launch();
  src_ = f.device;
  src_layer_stride_ = f.device_layer_stride;
  target_stream_ = static_cast<cudaStream_t>(f.device_stream);
  host_idx_.as<int32_t>()[n_] = static_cast<int32_t>(f.row0 + i);
  ++n_;
}

void feature_staging::launch() {
  if (!from_device_ || launched_ == n_) return;
  const int32_t k = n_ - launched_;
  DSPARK_CUDA_CHECK(cudaMemcpyAsync(dev_idx_ + launched_, host_idx_.as<int32_t>() + launched_,
                                    static_cast<size_t>(k) * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  cuda::gather_feature_rows(src_, src_layer_stride_, n_layers_, dev_idx_ + launched_, k, n_embd_,
                            rows_ + launched_ * width_, stream_);
  launched_ = n_;
  // The target's next forward rewrites src_: it starts after the gather has read it.
  DSPARK_CUDA_CHECK(cudaEventRecord(gathered_, stream_));
  if (target_stream_ != nullptr) DSPARK_CUDA_CHECK(cudaStreamWaitEvent(target_stream_, gathered_, 0));
}

int32_t feature_staging::flush() {
  const int32_t n = n_;
  if (n == 0) return 0;
  if (from_device_) {
    launch();
  } else {
    DSPARK_CUDA_CHECK(cudaMemcpyAsync(rows_, host_rows_.data(), static_cast<size_t>(n * width_) * sizeof(float),
                                      cudaMemcpyHostToDevice, stream_));
  }
  // Both kinds read pinned staging (rows or indices) asynchronously: the next add waits for it.
  DSPARK_CUDA_CHECK(cudaEventRecord(staged_, stream_));
  staged_pending_ = true;
  n_ = 0;
  launched_ = 0;
  src_ = nullptr;
  return n;
}

}  // namespace dspark

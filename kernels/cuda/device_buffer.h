// Owning handles for device memory, pinned host memory, streams and events.
//
// Move-only RAII wrappers: the destructor frees, and never throws (a failed free during
// unwinding is ignored; it can only mean the context is already gone). Allocation happens at
// construction time only, so a decode step that holds these never allocates.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>

#include "kernels/cuda/cuda_check.h"

namespace dspark::cuda {

// An owned CUDA allocation of `bytes`, released with the matching free; move-only. One class
// for both kinds so the ownership rules live in one place.
template <cudaError_t (*Alloc)(void**, size_t), cudaError_t (*Free)(void*)>
class cuda_allocation {
 public:
  cuda_allocation() = default;
  explicit cuda_allocation(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) DSPARK_CUDA_CHECK(Alloc(&ptr_, bytes));
  }
  ~cuda_allocation() { reset(); }
  cuda_allocation(const cuda_allocation&) = delete;
  cuda_allocation& operator=(const cuda_allocation&) = delete;
  cuda_allocation(cuda_allocation&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  cuda_allocation& operator=(cuda_allocation&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }

  void reset() noexcept {
    if (ptr_ != nullptr) (void)Free(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }

  void* data() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }
  bool empty() const { return ptr_ == nullptr; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

namespace detail {
// Non-template, non-overloaded wrappers, so their addresses can be template arguments.
inline cudaError_t device_alloc(void** p, size_t n) { return cudaMalloc(p, n); }
inline cudaError_t device_free(void* p) { return cudaFree(p); }
inline cudaError_t pinned_alloc(void** p, size_t n) { return cudaMallocHost(p, n); }
inline cudaError_t pinned_free(void* p) { return cudaFreeHost(p); }
}  // namespace detail

// `bytes` of device memory from cudaMalloc (256-byte aligned), or empty.
using device_buffer = cuda_allocation<detail::device_alloc, detail::device_free>;
// Page-locked host memory (for asynchronous copies that a CUDA graph can replay).
using pinned_buffer = cuda_allocation<detail::pinned_alloc, detail::pinned_free>;

// Sets `bytes` of device memory at `p` to `value` and returns once that is done. For buffers
// that are zeroed once at construction and then used on a stream of the class below: a plain
// cudaMemset is asynchronous on the default stream, and those streams are non-blocking, so they
// do not wait for it; a kernel enqueued on one right after could run BEFORE the memset and have
// its writes overwritten (it takes a busy GPU, e.g. other processes sharing it, to start the
// memset late).
inline void memset_and_wait(void* p, int value, size_t bytes) {
  DSPARK_CUDA_CHECK(cudaMemsetAsync(p, value, bytes, nullptr));
  DSPARK_CUDA_CHECK(cudaStreamSynchronize(nullptr));
}

class stream {
 public:
  stream() { DSPARK_CUDA_CHECK(cudaStreamCreateWithFlags(&s_, cudaStreamNonBlocking)); }
  ~stream() {
    if (s_ != nullptr) (void)cudaStreamDestroy(s_);
  }
  stream(const stream&) = delete;
  stream& operator=(const stream&) = delete;
  stream(stream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  cudaStream_t get() const { return s_; }
  void synchronize() const { DSPARK_CUDA_CHECK(cudaStreamSynchronize(s_)); }

 private:
  cudaStream_t s_ = nullptr;
};

class event {
 public:
  explicit event(unsigned flags = cudaEventDefault) {
    DSPARK_CUDA_CHECK(cudaEventCreateWithFlags(&e_, flags));
  }
  ~event() {
    if (e_ != nullptr) (void)cudaEventDestroy(e_);
  }
  event(const event&) = delete;
  event& operator=(const event&) = delete;
  event(event&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  cudaEvent_t get() const { return e_; }
  void record(cudaStream_t s) const { DSPARK_CUDA_CHECK(cudaEventRecord(e_, s)); }
  void synchronize() const { DSPARK_CUDA_CHECK(cudaEventSynchronize(e_)); }
  // Milliseconds from `start` to this event; both must have completed.
  float elapsed_ms_since(const event& start) const {
    float ms = 0.f;
    DSPARK_CUDA_CHECK(cudaEventElapsedTime(&ms, start.e_, e_));
    return ms;
  }

 private:
  cudaEvent_t e_ = nullptr;
};

}  // namespace dspark::cuda

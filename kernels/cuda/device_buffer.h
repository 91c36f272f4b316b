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

// `bytes` of device memory from cudaMalloc (256-byte aligned), or empty.
class device_buffer {
 public:
  device_buffer() = default;
  explicit device_buffer(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) DSPARK_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  }
  ~device_buffer() { reset(); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  device_buffer(device_buffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  device_buffer& operator=(device_buffer&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }

  void reset() noexcept {
    if (ptr_ != nullptr) (void)cudaFree(ptr_);
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

// Page-locked host memory (for asynchronous copies that a CUDA graph can replay).
class pinned_buffer {
 public:
  pinned_buffer() = default;
  explicit pinned_buffer(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) DSPARK_CUDA_CHECK(cudaMallocHost(&ptr_, bytes));
  }
  ~pinned_buffer() { reset(); }
  pinned_buffer(const pinned_buffer&) = delete;
  pinned_buffer& operator=(const pinned_buffer&) = delete;
  pinned_buffer(pinned_buffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  pinned_buffer& operator=(pinned_buffer&& o) noexcept {
    if (this != &o) {
      reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      bytes_ = std::exchange(o.bytes_, 0);
    }
    return *this;
  }
  void reset() noexcept {
    if (ptr_ != nullptr) (void)cudaFreeHost(ptr_);
    ptr_ = nullptr;
    bytes_ = 0;
  }
  void* data() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

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

// A POSIX shared-memory segment (shm_open + mmap): how target features reach a drafter process
// on the same host without being copied into messages. The verifier creates (and at the end
// unlinks) one; drafter services map it read-only by the name the verifier sends them.
#pragma once

#include <cstddef>
#include <string>

namespace dspark::actors {

class shared_segment {
 public:
  shared_segment() = default;
  // A new segment of `bytes` under a unique name, mapped read-write; std::runtime_error on failure.
  static shared_segment create(size_t bytes);
  // Maps an existing segment read-only; std::runtime_error (naming it) on failure or when it is
  // smaller than `bytes`.
  static shared_segment open_readonly(const std::string& name, size_t bytes);
  ~shared_segment();
  shared_segment(shared_segment&& o) noexcept;
  shared_segment& operator=(shared_segment&& o) noexcept;
  shared_segment(const shared_segment&) = delete;
  shared_segment& operator=(const shared_segment&) = delete;

  bool valid() const { return data_ != nullptr; }
  char* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& name() const { return name_; }

 private:
  void release();
  std::string name_;
  char* data_ = nullptr;
  size_t size_ = 0;
  bool owner_ = false;  // the creator unlinks the name
};

}  // namespace dspark::actors

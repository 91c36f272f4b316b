// A read-only memory mapping of a whole file (weights are never copied to the heap).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace dspark {

class mapped_file {
 public:
  // Maps `path` read-only; throws format_error naming the path if it cannot be opened.
  explicit mapped_file(const std::string& path);
  ~mapped_file();
  mapped_file(const mapped_file&) = delete;
  mapped_file& operator=(const mapped_file&) = delete;
  mapped_file(mapped_file&& other) noexcept;
  mapped_file& operator=(mapped_file&& other) noexcept;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace dspark

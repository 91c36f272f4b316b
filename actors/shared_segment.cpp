// shared_segment: see shared_segment.h.
#include "actors/shared_segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <utility>

namespace dspark::actors {

namespace {
std::atomic<uint64_t> g_counter{0};
}

shared_segment shared_segment::create(size_t bytes) {
  shared_segment s;
  s.name_ = "/dspark-features-" + std::to_string(::getpid()) + "-" + std::to_string(g_counter++);
  const int fd = ::shm_open(s.name_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (fd < 0) throw std::runtime_error("shm_open " + s.name_ + ": " + std::strerror(errno));
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    const int e = errno;
    ::close(fd);
    ::shm_unlink(s.name_.c_str());
    throw std::runtime_error("ftruncate " + s.name_ + ": " + std::strerror(e));
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    ::shm_unlink(s.name_.c_str());
    throw std::runtime_error("mmap " + s.name_ + ": " + std::strerror(errno));
  }
  s.data_ = static_cast<char*>(p);
  s.size_ = bytes;
  s.owner_ = true;
  return s;
}

shared_segment shared_segment::open_readonly(const std::string& name, size_t bytes) {
  shared_segment s;
  s.name_ = name;
  const int fd = ::shm_open(name.c_str(), O_RDONLY, 0);
  if (fd < 0) throw std::runtime_error("shm_open " + name + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) < bytes) {
    ::close(fd);
    throw std::runtime_error("shared segment " + name + " is smaller than " + std::to_string(bytes) + " bytes");
  }
  void* p = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) throw std::runtime_error("mmap " + name + ": " + std::strerror(errno));
  s.data_ = static_cast<char*>(p);
  s.size_ = bytes;
  return s;
}

void shared_segment::release() {
  if (data_) ::munmap(data_, size_);
  if (owner_ && !name_.empty()) ::shm_unlink(name_.c_str());
  data_ = nullptr;
  size_ = 0;
  owner_ = false;
}

shared_segment::~shared_segment() { release(); }

shared_segment::shared_segment(shared_segment&& o) noexcept
    : name_(std::move(o.name_)), data_(std::exchange(o.data_, nullptr)), size_(std::exchange(o.size_, 0)),
      owner_(std::exchange(o.owner_, false)) {}

shared_segment& shared_segment::operator=(shared_segment&& o) noexcept {
  if (this != &o) {
    release();
    name_ = std::move(o.name_);
    data_ = std::exchange(o.data_, nullptr);
    size_ = std::exchange(o.size_, 0);
    owner_ = std::exchange(o.owner_, false);
  }
  return *this;
}

}  // namespace dspark::actors

// The binary framing shared by every server-internal message (intake <-> verifier, verifier <->
// drafter): little-endian fixed-width fields, length-prefixed arrays, checked on every read.
//
//   frame = [u8 version][u16 type][fields ...]
//
// wire_writer appends to a caller-owned std::string that keeps its capacity between messages,
// so a steady stream of encodes stops allocating once the buffer reached its largest size.
// wire_reader never reads past the end: every read checks the remaining bytes and every array
// length is checked against both the remaining bytes and a per-field maximum before anything is
// allocated, so a truncated, oversized or garbage frame becomes a wire_error naming the field.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace dspark::msg {

// A frame that cannot be decoded: wrong version, unknown type, truncated, a length over its
// limit. The message names the field.
struct wire_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline constexpr uint8_t k_wire_version = 1;

class wire_writer {
 public:
  // Clears `out` (keeping its capacity) and writes the frame header.
  wire_writer(std::string& out, uint16_t type);

  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u16(uint16_t v) { put(&v, sizeof v); }
  void i32(int32_t v) { put(&v, sizeof v); }
  void u32(uint32_t v) { put(&v, sizeof v); }
  void u64(uint64_t v) { put(&v, sizeof v); }
  void i64(int64_t v) { put(&v, sizeof v); }
  void f32(float v) { put(&v, sizeof v); }
  void f64(double v) { put(&v, sizeof v); }
  void str(std::string_view s);                  // u32 length + bytes
  void i32s(std::span<const int32_t> v);         // u32 count + raw little-endian block
  void f32s(std::span<const float> v);           // u32 count + raw little-endian block

 private:
  void put(const void* p, size_t n);
  std::string& out_;
};

class wire_reader {
 public:
  // Checks the version byte; type() is then the frame's type tag. wire_error when the frame is
  // shorter than a header or of another version.
  explicit wire_reader(std::string_view frame);

  uint16_t type() const { return type_; }
  uint8_t u8(const char* field);
  uint16_t u16(const char* field) { return get<uint16_t>(field); }
  int32_t i32(const char* field) { return get<int32_t>(field); }
  uint32_t u32(const char* field) { return get<uint32_t>(field); }
  uint64_t u64(const char* field) { return get<uint64_t>(field); }
  int64_t i64(const char* field) { return get<int64_t>(field); }
  float f32(const char* field) { return get<float>(field); }
  double f64(const char* field) { return get<double>(field); }
  // Strings and arrays longer than max_count elements are refused before allocation.
  std::string str(const char* field, uint32_t max_bytes);
  void i32s(const char* field, uint32_t max_count, std::vector<int32_t>& out);
  void f32s(const char* field, uint32_t max_count, std::vector<float>& out);
  // wire_error unless every byte was consumed (trailing garbage is an error, not ignored).
  void finish() const;

 private:
  template <class T>
  T get(const char* field) {
    T v;
    need(sizeof v, field);
    std::memcpy(&v, p_.data() + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }
  void need(size_t n, const char* field) const;
  uint32_t count(const char* field, uint32_t max_count, size_t elem);

  std::string_view p_;
  size_t pos_ = 0;
  uint16_t type_ = 0;
};

}  // namespace dspark::msg

// Binary framing: see wire.h. The host is little-endian (x86-64, aarch64 Linux); a static_assert
// keeps a big-endian build from silently writing another byte order.
#include "messages/wire.h"

#include <bit>

namespace dspark::msg {

static_assert(std::endian::native == std::endian::little, "the wire format is little-endian");

wire_writer::wire_writer(std::string& out, uint16_t type) : out_(out) {
  out_.clear();
  u8(k_wire_version);
  u16(type);
}

void wire_writer::put(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }

void wire_writer::str(std::string_view s) {
  u32(static_cast<uint32_t>(s.size()));
  put(s.data(), s.size());
}

void wire_writer::i32s(std::span<const int32_t> v) {
  u32(static_cast<uint32_t>(v.size()));
  put(v.data(), v.size_bytes());
}

void wire_writer::f32s(std::span<const float> v) {
  u32(static_cast<uint32_t>(v.size()));
  put(v.data(), v.size_bytes());
}

wire_reader::wire_reader(std::string_view frame) : p_(frame) {
  const uint8_t v = u8("version");
  if (v != k_wire_version)
    throw wire_error("unsupported wire version " + std::to_string(v) + " (this build speaks " +
                     std::to_string(k_wire_version) + ")");
  type_ = u16("type");
}

void wire_reader::need(size_t n, const char* field) const {
  if (p_.size() - pos_ < n)
    throw wire_error(std::string("truncated frame reading '") + field + "': needs " + std::to_string(n) +
                     " bytes, " + std::to_string(p_.size() - pos_) + " left");
}

uint8_t wire_reader::u8(const char* field) {
  need(1, field);
  return static_cast<uint8_t>(p_[pos_++]);
}

uint32_t wire_reader::count(const char* field, uint32_t max_count, size_t elem) {
  const uint32_t n = u32(field);
  if (n > max_count)
    throw wire_error(std::string("'") + field + "' has " + std::to_string(n) + " elements, at most " +
                     std::to_string(max_count) + " allowed");
  need(static_cast<size_t>(n) * elem, field);
  return n;
}

std::string wire_reader::str(const char* field, uint32_t max_bytes) {
  const uint32_t n = count(field, max_bytes, 1);
  std::string s(p_.substr(pos_, n));
  pos_ += n;
  return s;
}

void wire_reader::i32s(const char* field, uint32_t max_count, std::vector<int32_t>& out) {
  const uint32_t n = count(field, max_count, sizeof(int32_t));
  out.resize(n);
  std::memcpy(out.data(), p_.data() + pos_, n * sizeof(int32_t));
  pos_ += n * sizeof(int32_t);
}

void wire_reader::f32s(const char* field, uint32_t max_count, std::vector<float>& out) {
  const uint32_t n = count(field, max_count, sizeof(float));
  out.resize(n);
  std::memcpy(out.data(), p_.data() + pos_, n * sizeof(float));
  pos_ += n * sizeof(float);
}

void wire_reader::finish() const {
  if (pos_ != p_.size())
    throw wire_error("frame has " + std::to_string(p_.size() - pos_) + " trailing bytes");
}

}  // namespace dspark::msg

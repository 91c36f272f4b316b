// GGUF (version 2 and 3) reader: metadata key/values and tensor views over a mapping.
//
// Every length, count, offset and type read from the file is validated against the file
// size before use, so a truncated or corrupted file gives a format_error, never a crash.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/mapped_file.h"
#include "models/formats/tensor_view.h"

namespace dspark {

// GGUF's metadata value types (numeric ids from the format; only ever append).
enum class gguf_type : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};

// One metadata value. Scalars fill exactly one of the scalar fields (integers, signed or not,
// land in `integer`, floats in `real`); arrays fill one of the vectors by element kind.
struct gguf_value {
  gguf_type type = gguf_type::u8;
  gguf_type array_type = gguf_type::u8;  // element type when type == array
  int64_t integer = 0;
  double real = 0.0;
  bool boolean = false;
  std::string string;
  std::vector<int64_t> integers;       // integer or bool arrays
  std::vector<double> reals;           // float arrays
  std::vector<std::string> strings;    // string arrays
};

class gguf_file {
 public:
  // Opens and validates the file; throws format_error with the path and the reason.
  static gguf_file open(const std::string& path);

  uint32_t version() const { return version_; }
  const std::string& path() const { return map_->path(); }

  const gguf_value* find(std::string_view key) const;
  // Typed getters: nullopt when the key is absent; format_error when present with a wrong type.
  std::optional<int64_t> get_int(std::string_view key) const;
  std::optional<double> get_float(std::string_view key) const;  // accepts integer values too
  std::optional<bool> get_bool(std::string_view key) const;
  std::optional<std::string> get_string(std::string_view key) const;
  const std::vector<std::string>* get_strings(std::string_view key) const;
  const std::vector<int64_t>* get_ints(std::string_view key) const;
  const std::vector<double>* get_floats(std::string_view key) const;
  const std::unordered_map<std::string, gguf_value>& metadata() const { return kv_; }

  const std::vector<tensor_view>& tensors() const { return tensors_; }
  const tensor_view* find_tensor(std::string_view name) const;

 private:
  std::shared_ptr<mapped_file> map_;
  uint32_t version_ = 0;
  std::unordered_map<std::string, gguf_value> kv_;
  std::vector<tensor_view> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

}  // namespace dspark

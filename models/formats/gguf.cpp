// GGUF v2/v3 reader (little-endian files only).
//
// Layout: magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv | n_kv key/values |
// n_tensors tensor infos (name, u32 n_dims, i64 ne[n_dims], u32 type, u64 offset) | padding to
// `general.alignment` (default 32) | tensor data, each tensor at data_start + offset.
//
// Nothing read from the file is trusted: every length is compared with the bytes left before
// anything is allocated or read, so a corrupt file costs at most O(file size) memory and gives a
// format_error naming the field, its value and the valid range.
#include "models/formats/gguf.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "common/error.h"

namespace dspark {

namespace {

constexpr uint64_t k_default_alignment = 32;

std::string type_name(gguf_type t) {
  switch (t) {
    case gguf_type::u8: return "u8";
    case gguf_type::i8: return "i8";
    case gguf_type::u16: return "u16";
    case gguf_type::i16: return "i16";
    case gguf_type::u32: return "u32";
    case gguf_type::i32: return "i32";
    case gguf_type::f32: return "f32";
    case gguf_type::boolean: return "bool";
    case gguf_type::string: return "string";
    case gguf_type::array: return "array";
    case gguf_type::u64: return "u64";
    case gguf_type::i64: return "i64";
    case gguf_type::f64: return "f64";
  }
  return "type " + std::to_string(static_cast<uint32_t>(t));
}

bool is_integer(gguf_type t) {
  switch (t) {
    case gguf_type::u8: case gguf_type::i8: case gguf_type::u16: case gguf_type::i16:
    case gguf_type::u32: case gguf_type::i32: case gguf_type::u64: case gguf_type::i64:
      return true;
    default:
      return false;
  }
}

bool is_real(gguf_type t) { return t == gguf_type::f32 || t == gguf_type::f64; }

// Smallest encoded size of one value of type t (strings: just their u64 length).
uint64_t min_encoded_size(gguf_type t) {
  switch (t) {
    case gguf_type::u8: case gguf_type::i8: case gguf_type::boolean: return 1;
    case gguf_type::u16: case gguf_type::i16: return 2;
    case gguf_type::u32: case gguf_type::i32: case gguf_type::f32: return 4;
    case gguf_type::u64: case gguf_type::i64: case gguf_type::f64: return 8;
    case gguf_type::string: return 8;
    case gguf_type::array: return 12;
  }
  return 1;
}

// A bounds-checked little-endian cursor over the mapping.
class reader {
 public:
  reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }

  // Throws naming `what` unless n more bytes are available.
  void need(uint64_t n, const char* what) const {
    if (n > remaining()) {
      throw format_error(std::string("truncated at byte ") + std::to_string(pos_) + ": " + what +
                         " needs " + std::to_string(n) + " bytes, " +
                         std::to_string(remaining()) + " left");
    }
  }

  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, data_ + pos_, sizeof v);
    pos_ += sizeof v;
    return v;
  }

  std::string read_string(const char* what) {
    const uint64_t len = read<uint64_t>(what);
    if (len > remaining()) {
      throw format_error(std::string(what) + ": string length " + std::to_string(len) +
                         " exceeds the " + std::to_string(remaining()) + " bytes left in the file");
    }
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(len));
    pos_ += static_cast<size_t>(len);
    return s;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

gguf_type read_type(reader& r, const std::string& key) {
  const uint32_t t = r.read<uint32_t>("value type");
  if (t > static_cast<uint32_t>(gguf_type::f64)) {
    throw format_error("key '" + key + "': unknown value type " + std::to_string(t) +
                       " (valid 0..12)");
  }
  return static_cast<gguf_type>(t);
}

// Reads one scalar of type t into v (integers into v.integer, floats into v.real, ...).
void read_scalar(reader& r, gguf_type t, gguf_value& v) {
  switch (t) {
    case gguf_type::u8: v.integer = r.read<uint8_t>("u8 value"); break;
    case gguf_type::i8: v.integer = r.read<int8_t>("i8 value"); break;
    case gguf_type::u16: v.integer = r.read<uint16_t>("u16 value"); break;
    case gguf_type::i16: v.integer = r.read<int16_t>("i16 value"); break;
    case gguf_type::u32: v.integer = r.read<uint32_t>("u32 value"); break;
    case gguf_type::i32: v.integer = r.read<int32_t>("i32 value"); break;
    case gguf_type::u64: v.integer = static_cast<int64_t>(r.read<uint64_t>("u64 value")); break;
    case gguf_type::i64: v.integer = r.read<int64_t>("i64 value"); break;
    case gguf_type::f32: v.real = r.read<float>("f32 value"); break;
    case gguf_type::f64: v.real = r.read<double>("f64 value"); break;
    case gguf_type::boolean: {
      const uint8_t b = r.read<uint8_t>("bool value");
      if (b > 1) throw format_error("bool value " + std::to_string(b) + " is not 0 or 1");
      v.boolean = b != 0;
      v.integer = b;
      break;
    }
    case gguf_type::string: v.string = r.read_string("string value"); break;
    case gguf_type::array: throw format_error("nested value is not a scalar");
  }
}

gguf_value read_value(reader& r, const std::string& key) {
  gguf_value v;
  v.type = read_type(r, key);
  if (v.type != gguf_type::array) {
    read_scalar(r, v.type, v);
    return v;
  }
  v.array_type = read_type(r, key);
  if (v.array_type == gguf_type::array) {
    throw format_error("key '" + key + "': arrays of arrays are not supported");
  }
  const uint64_t n = r.read<uint64_t>("array length");
  // Bound the length by the bytes left so a bogus count cannot make us allocate gigabytes.
  const uint64_t max_n = r.remaining() / min_encoded_size(v.array_type);
  if (n > max_n) {
    throw format_error("key '" + key + "': array length " + std::to_string(n) + " of " +
                       type_name(v.array_type) + " exceeds the " + std::to_string(max_n) +
                       " that fit in the bytes left");
  }
  gguf_value item;
  if (v.array_type == gguf_type::string) {
    v.strings.reserve(static_cast<size_t>(n));
    for (uint64_t i = 0; i < n; ++i) v.strings.push_back(r.read_string("array string"));
  } else if (is_real(v.array_type)) {
    v.reals.reserve(static_cast<size_t>(n));
    for (uint64_t i = 0; i < n; ++i) {
      read_scalar(r, v.array_type, item);
      v.reals.push_back(item.real);
    }
  } else {
    v.integers.reserve(static_cast<size_t>(n));
    for (uint64_t i = 0; i < n; ++i) {
      read_scalar(r, v.array_type, item);
      v.integers.push_back(item.integer);
    }
  }
  return v;
}

uint64_t alignment_of(const std::unordered_map<std::string, gguf_value>& kv) {
  const auto it = kv.find("general.alignment");
  if (it == kv.end()) return k_default_alignment;
  const gguf_value& v = it->second;
  if (!is_integer(v.type)) {
    throw format_error("general.alignment has type " + type_name(v.type) + ", expected an integer");
  }
  const int64_t a = v.integer;
  if (a <= 0 || a > (int64_t{1} << 30) || (a & (a - 1)) != 0) {
    throw format_error("general.alignment " + std::to_string(a) +
                       " is not a power of two in [1, 2^30]");
  }
  return static_cast<uint64_t>(a);
}

// Reads one tensor info into a view with name, type, shape (ne reversed) and n_bytes; its
// `data` is set by the caller once the data section start is known. `offset` is relative to it.
tensor_view read_tensor_info(reader& r, uint64_t alignment, uint64_t& offset) {
  tensor_view t;
  t.name = r.read_string("tensor name");
  const uint32_t n_dims = r.read<uint32_t>("tensor n_dims");
  if (n_dims > 4) {
    throw format_error("tensor '" + t.name + "': n_dims " + std::to_string(n_dims) +
                       " outside [0, 4]");
  }
  int64_t ne[4] = {1, 1, 1, 1};
  int64_t n_elements = 1;
  bool any_zero = false;
  for (uint32_t i = 0; i < n_dims; ++i) {
    ne[i] = r.read<int64_t>("tensor ne");
    if (ne[i] < 0) {
      throw format_error("tensor '" + t.name + "': ne[" + std::to_string(i) + "] = " +
                         std::to_string(ne[i]) + " is negative");
    }
    if (ne[i] == 0) any_zero = true;
    // Overflow-safe product: ignore zero dims for the bound, the total is then 0 anyway.
    if (ne[i] != 0) {
      if (n_elements > std::numeric_limits<int64_t>::max() / ne[i]) {
        throw format_error("tensor '" + t.name + "': element count overflows int64");
      }
      n_elements *= ne[i];
    }
  }
  if (any_zero) n_elements = 0;
  const uint32_t type_id = r.read<uint32_t>("tensor type");
  const auto tr = dtype_traits_of(type_id);
  if (!tr) {
    throw format_error("tensor '" + t.name + "': unsupported tensor type id " +
                       std::to_string(type_id) +
                       " (supported: f32=0 f16=1 q4_0=2 q4_1=3 q8_0=8 q4_k=12 q6_k=14 bf16=30)");
  }
  t.type = static_cast<dtype>(type_id);
  if (ne[0] % tr->block_size != 0) {
    throw format_error("tensor '" + t.name + "': row length ne[0] = " + std::to_string(ne[0]) +
                       " is not a multiple of " + std::string(tr->name) + "'s block size " +
                       std::to_string(tr->block_size));
  }
  t.n_bytes = bytes_for(t.type, n_elements);
  offset = r.read<uint64_t>("tensor offset");
  if (offset % alignment != 0) {
    throw format_error("tensor '" + t.name + "': offset " + std::to_string(offset) +
                       " is not a multiple of the alignment " + std::to_string(alignment));
  }
  for (int i = static_cast<int>(n_dims) - 1; i >= 0; --i) t.shape.push_back(ne[i]);
  return t;
}

}  // namespace

gguf_file gguf_file::open(const std::string& path) {
  gguf_file f;
  f.map_ = std::make_shared<mapped_file>(path);
  try {
    reader r(f.map_->data(), f.map_->size());
    r.need(4, "magic");
    if (std::memcmp(f.map_->data(), "GGUF", 4) != 0) {
      throw format_error("bad magic (expected \"GGUF\"): not a GGUF file");
    }
    r.read<uint32_t>("magic");
    f.version_ = r.read<uint32_t>("version");
    if (f.version_ != 2 && f.version_ != 3) {
      throw format_error("unsupported GGUF version " + std::to_string(f.version_) +
                         " (supported: 2, 3)");
    }
    const uint64_t n_tensors = r.read<uint64_t>("tensor count");
    const uint64_t n_kv = r.read<uint64_t>("metadata count");
    // Each key/value takes at least 8 (key length) + 4 (type) + 1 bytes; each tensor info at
    // least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset).
    if (n_kv > r.remaining() / 13) {
      throw format_error("metadata count " + std::to_string(n_kv) + " cannot fit in the " +
                         std::to_string(r.remaining()) + " bytes left");
    }
    for (uint64_t i = 0; i < n_kv; ++i) {
      std::string key = r.read_string("metadata key");
      gguf_value v = read_value(r, key);
      if (!f.kv_.emplace(key, std::move(v)).second) {
        throw format_error("duplicate metadata key '" + key + "'");
      }
    }
    if (n_tensors > r.remaining() / 24) {
      throw format_error("tensor count " + std::to_string(n_tensors) + " cannot fit in the " +
                         std::to_string(r.remaining()) + " bytes left");
    }
    const uint64_t alignment = alignment_of(f.kv_);
    std::vector<uint64_t> offsets(static_cast<size_t>(n_tensors));
    f.tensors_.reserve(static_cast<size_t>(n_tensors));
    for (uint64_t i = 0; i < n_tensors; ++i) {
      f.tensors_.push_back(read_tensor_info(r, alignment, offsets[i]));
      if (!f.tensor_index_.emplace(f.tensors_.back().name, f.tensors_.size() - 1).second) {
        throw format_error("duplicate tensor name '" + f.tensors_.back().name + "'");
      }
    }
    // The data section starts at the next multiple of the alignment after the infos.
    const uint64_t info_end = r.pos();
    const uint64_t data_start = (info_end + alignment - 1) / alignment * alignment;
    const uint64_t file_size = f.map_->size();
    if (n_tensors > 0 && data_start > file_size) {
      throw format_error("data section start " + std::to_string(data_start) +
                         " is past the end of the file (" + std::to_string(file_size) + " bytes)");
    }
    const uint64_t data_size = n_tensors > 0 ? file_size - data_start : 0;
    std::vector<size_t> order(f.tensors_.size());
    for (size_t i = 0; i < order.size(); ++i) {
      tensor_view& t = f.tensors_[i];
      if (offsets[i] > data_size || t.n_bytes > data_size - offsets[i]) {
        throw format_error("tensor '" + t.name + "': data [" + std::to_string(offsets[i]) + ", " +
                           std::to_string(offsets[i]) + " + " + std::to_string(t.n_bytes) +
                           ") lies outside the data section of " + std::to_string(data_size) +
                           " bytes");
      }
      t.data = f.map_->data() + data_start + offsets[i];
      order[i] = i;
    }
    // Tensors must not share bytes: a writer lays them out one after another.
    std::sort(order.begin(), order.end(),
              [&](size_t a, size_t b) { return offsets[a] < offsets[b]; });
    for (size_t k = 1; k < order.size(); ++k) {
      const size_t prev = order[k - 1], cur = order[k];
      if (offsets[prev] + f.tensors_[prev].n_bytes > offsets[cur]) {
        throw format_error("tensors '" + f.tensors_[prev].name + "' and '" + f.tensors_[cur].name +
                           "' overlap (offsets " + std::to_string(offsets[prev]) + " and " +
                           std::to_string(offsets[cur]) + ")");
      }
    }
  } catch (const format_error& e) {
    throw format_error("gguf '" + path + "': " + e.what());
  }
  return f;
}

const gguf_value* gguf_file::find(std::string_view key) const {
  const auto it = kv_.find(std::string(key));
  return it == kv_.end() ? nullptr : &it->second;
}

namespace {

[[noreturn]] void wrong_type(std::string_view key, const gguf_value& v, const char* expected) {
  std::string got = type_name(v.type);
  if (v.type == gguf_type::array) got += " of " + type_name(v.array_type);
  throw format_error("metadata key '" + std::string(key) + "' has type " + got + ", expected " +
                     expected);
}

}  // namespace

std::optional<int64_t> gguf_file::get_int(std::string_view key) const {
  const gguf_value* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (!is_integer(v->type)) wrong_type(key, *v, "an integer");
  return v->integer;
}

std::optional<double> gguf_file::get_float(std::string_view key) const {
  const gguf_value* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (is_real(v->type)) return v->real;
  if (is_integer(v->type)) return static_cast<double>(v->integer);
  wrong_type(key, *v, "a number");
}

std::optional<bool> gguf_file::get_bool(std::string_view key) const {
  const gguf_value* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (v->type != gguf_type::boolean) wrong_type(key, *v, "bool");
  return v->boolean;
}

std::optional<std::string> gguf_file::get_string(std::string_view key) const {
  const gguf_value* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (v->type != gguf_type::string) wrong_type(key, *v, "string");
  return v->string;
}

const std::vector<std::string>* gguf_file::get_strings(std::string_view key) const {
  const gguf_value* v = find(key);
  if (v == nullptr) return nullptr;
  if (v->type != gguf_type::array || v->array_type != gguf_type::string) {
    wrong_type(key, *v, "array of string");
  }
  return &v->strings;
}

const std::vector<int64_t>* gguf_file::get_ints(std::string_view key) const {
  const gguf_value* v = find(key);
  if (v == nullptr) return nullptr;
  if (v->type != gguf_type::array ||
      !(is_integer(v->array_type) || v->array_type == gguf_type::boolean)) {
    wrong_type(key, *v, "array of integer");
  }
  return &v->integers;
}

const std::vector<double>* gguf_file::get_floats(std::string_view key) const {
  const gguf_value* v = find(key);
  if (v == nullptr) return nullptr;
  if (v->type != gguf_type::array || !is_real(v->array_type)) {
    wrong_type(key, *v, "array of float");
  }
  return &v->reals;
}

const tensor_view* gguf_file::find_tensor(std::string_view name) const {
  const auto it = tensor_index_.find(std::string(name));
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace dspark

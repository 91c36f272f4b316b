// Helpers for the format tests: hex fixtures, float comparison, scratch directories, and
// byte-level writers that build small GGUF and safetensors files from the format specs.
//
// The writers are deliberately dumb (they append bytes exactly as the specs lay them out, and
// can be told to write invalid values), so tests can produce both valid files and each kind of
// corruption. Values read back are checked against literals, not against the reader.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "tests/test_support.h"

namespace dspark::test {

inline std::vector<uint8_t> from_hex(const std::string& hex) {
  std::vector<uint8_t> out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<uint8_t>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  }
  return out;
}

inline std::vector<float> floats_from_hex(const std::string& hex) {
  const std::vector<uint8_t> b = from_hex(hex);
  std::vector<float> f(b.size() / 4);
  if (!f.empty()) std::memcpy(f.data(), b.data(), f.size() * 4);
  return f;
}

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

inline nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open fixture " + path);
  return nlohmann::json::parse(in);
}

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// A fresh directory under the system temp dir, removed with everything in it on destruction.
class scratch_dir {
 public:
  scratch_dir() {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string name = "dspark_formats_" + std::to_string(::getpid()) + "_" +
                       std::to_string(counter++);
    if (info != nullptr) name += std::string("_") + info->name();
    path_ = std::filesystem::temp_directory_path() / name;
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~scratch_dir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Little-endian appends.
template <typename T>
void put(std::string& s, T v) {
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof v);
  s.append(b, sizeof b);
}
inline void put_str(std::string& s, const std::string& v) {
  put<uint64_t>(s, v.size());
  s += v;
}

// Builds a GGUF file: header, key/values, tensor infos, padding, data (spec order).
struct gguf_builder {
  uint32_t version = 3;
  uint64_t alignment = 32;  // layout alignment; add a general.alignment kv to change the reader's
  std::string kvs;
  uint64_t n_kv = 0;
  struct tensor {
    std::string name;
    std::vector<int64_t> ne;  // innermost first, as stored
    uint32_t type;
    std::string data;
    int64_t offset_override = -1;  // write this offset instead of the computed one
  };
  std::vector<tensor> tensors;

  // A key with a raw (type id, payload) pair: lets tests write any value, valid or not.
  void kv_raw(const std::string& key, uint32_t type, const std::string& payload) {
    put_str(kvs, key);
    put<uint32_t>(kvs, type);
    kvs += payload;
    ++n_kv;
  }
  template <typename T>
  void kv(const std::string& key, uint32_t type, T v) {
    std::string p;
    put<T>(p, v);
    kv_raw(key, type, p);
  }
  void kv_string(const std::string& key, const std::string& v) {
    std::string p;
    put_str(p, v);
    kv_raw(key, 8, p);
  }
  template <typename T>
  void kv_array(const std::string& key, uint32_t elem_type, const std::vector<T>& v) {
    std::string p;
    put<uint32_t>(p, elem_type);
    put<uint64_t>(p, v.size());
    for (const T& x : v) put<T>(p, x);
    kv_raw(key, 9, p);
  }
  void kv_strings(const std::string& key, const std::vector<std::string>& v) {
    std::string p;
    put<uint32_t>(p, 8);
    put<uint64_t>(p, v.size());
    for (const auto& x : v) put_str(p, x);
    kv_raw(key, 9, p);
  }
  void add_tensor(const std::string& name, std::vector<int64_t> ne, uint32_t type,
                  std::string data) {
    tensors.push_back({name, std::move(ne), type, std::move(data)});
  }

  std::string build() const {
    std::string s = "GGUF";
    put<uint32_t>(s, version);
    put<uint64_t>(s, tensors.size());
    put<uint64_t>(s, n_kv);
    s += kvs;
    uint64_t offset = 0;
    std::vector<uint64_t> offsets;
    for (const tensor& t : tensors) {
      put_str(s, t.name);
      put<uint32_t>(s, static_cast<uint32_t>(t.ne.size()));
      for (int64_t d : t.ne) put<int64_t>(s, d);
      put<uint32_t>(s, t.type);
      put<uint64_t>(s, t.offset_override >= 0 ? static_cast<uint64_t>(t.offset_override) : offset);
      offsets.push_back(offset);
      offset += (t.data.size() + alignment - 1) / alignment * alignment;
    }
    s.resize((s.size() + alignment - 1) / alignment * alignment, '\0');
    for (size_t i = 0; i < tensors.size(); ++i) {
      s += tensors[i].data;
      s.resize((s.size() + alignment - 1) / alignment * alignment, '\0');
    }
    return s;
  }
};

// Builds a safetensors file from (name, dtype string, shape, bytes) entries laid out in order.
struct safetensors_builder {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  void add(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape,
           const std::string& bytes) {
    header[name] = {{"dtype", dtype}, {"shape", shape},
                    {"data_offsets", {data.size(), data.size() + bytes.size()}}};
    data += bytes;
  }
  std::string build() const { return build_with_header(header.dump()); }
  std::string build_with_header(const std::string& h) const {
    std::string s;
    put<uint64_t>(s, h.size());
    return s + h + data;
  }
};

template <typename T>
std::string bytes_of(const std::vector<T>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(T));
}

}  // namespace dspark::test

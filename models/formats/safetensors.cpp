// safetensors reader: single files and Hugging Face model folders.
//
// File layout: u64 little-endian header length N | N bytes of JSON | data section. The JSON maps
// tensor names to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data
// section) plus an optional "__metadata__" string map. Every field is validated before a view is
// made: known dtype, shape product times the element size equals end - begin, ranges inside the
// data section and pairwise disjoint.
#include "models/formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "common/error.h"

namespace dspark {

namespace {

using nlohmann::json;

// Maps a safetensors dtype string to ours; throws naming the dtype when it is not supported.
dtype dtype_from_string(const std::string& name, const std::string& tensor) {
  if (name == "F32") return dtype::f32;
  if (name == "F16") return dtype::f16;
  if (name == "BF16") return dtype::bf16;
  throw format_error("tensor '" + tensor + "': unsupported dtype '" + name +
                     "' (supported: F32, F16, BF16)");
}

// A non-negative JSON integer no larger than `max`; throws naming `what` otherwise.
uint64_t json_uint(const json& v, const std::string& what, uint64_t max) {
  if (!v.is_number_unsigned()) {
    throw format_error(what + " is " + v.dump() + ", expected a non-negative integer");
  }
  const uint64_t x = v.get<uint64_t>();
  if (x > max) {
    throw format_error(what + " = " + std::to_string(x) + " exceeds " + std::to_string(max));
  }
  return x;
}

json parse_json(const char* begin, const char* end, const std::string& what) {
  try {
    return json::parse(begin, end);
  } catch (const json::exception& e) {
    throw format_error(what + " is not valid JSON: " + e.what());
  }
}

json read_json_file(const std::filesystem::path& p) {
  // Built by appends: GCC 12 gives a false -Wrestrict on "'" + std::string&& here.
  std::string quoted(1, '\'');
  quoted += p.string();
  quoted += '\'';
  std::error_code ec;
  if (!std::filesystem::is_regular_file(p, ec)) {
    throw format_error(quoted + " is missing or not a regular file");
  }
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  if (!in) throw format_error("cannot read " + quoted);
  const std::string text = ss.str();
  json j = parse_json(text.data(), text.data() + text.size(), quoted);
  if (!j.is_object()) throw format_error(quoted + " is not a JSON object");
  return j;
}

// Builds one tensor view from its header entry; `data` is the data section of `data_size` bytes.
tensor_view make_view(const std::string& name, const json& entry, const uint8_t* data,
                      uint64_t data_size, uint64_t& begin) {
  if (!entry.is_object()) throw format_error("tensor '" + name + "': entry is not an object");
  const auto dt = entry.find("dtype");
  const auto sh = entry.find("shape");
  const auto off = entry.find("data_offsets");
  if (dt == entry.end() || !dt->is_string() || sh == entry.end() || !sh->is_array() ||
      off == entry.end() || !off->is_array() || off->size() != 2) {
    throw format_error("tensor '" + name +
                       "': needs \"dtype\" (string), \"shape\" (array), \"data_offsets\" ([b, e])");
  }
  tensor_view t;
  t.name = name;
  t.type = dtype_from_string(dt->get<std::string>(), name);
  if (sh->size() > 8) {
    throw format_error("tensor '" + name + "': " + std::to_string(sh->size()) +
                       " dimensions, at most 8 supported");
  }
  uint64_t n_elements = 1;
  const uint64_t max_dim = static_cast<uint64_t>(std::numeric_limits<int64_t>::max());
  for (const json& d : *sh) {
    const uint64_t n = json_uint(d, "tensor '" + name + "': shape entry", max_dim);
    t.shape.push_back(static_cast<int64_t>(n));
    if (n != 0 && n_elements > max_dim / n) {
      throw format_error("tensor '" + name + "': element count overflows int64");
    }
    n_elements *= n;
  }
  begin = json_uint((*off)[0], "tensor '" + name + "': data_offsets[0]", data_size);
  const uint64_t end = json_uint((*off)[1], "tensor '" + name + "': data_offsets[1]", data_size);
  if (end < begin) {
    throw format_error("tensor '" + name + "': data_offsets [" + std::to_string(begin) + ", " +
                       std::to_string(end) + "] end before begin");
  }
  t.n_bytes = bytes_for(t.type, static_cast<int64_t>(n_elements));
  if (t.n_bytes != end - begin) {
    throw format_error("tensor '" + name + "': data_offsets span " + std::to_string(end - begin) +
                       " bytes but shape and dtype need " + std::to_string(t.n_bytes));
  }
  t.data = data + begin;
  return t;
}

}  // namespace

safetensors_file safetensors_file::open(const std::string& path) {
  safetensors_file f;
  f.map_ = std::make_shared<mapped_file>(path);
  try {
    const uint64_t size = f.map_->size();
    if (size < 8) {
      throw format_error("file of " + std::to_string(size) + " bytes is too short for the header");
    }
    uint64_t header_len;
    std::memcpy(&header_len, f.map_->data(), 8);
    if (header_len > size - 8) {
      throw format_error("header length " + std::to_string(header_len) + " exceeds the " +
                         std::to_string(size - 8) + " bytes after the length field");
    }
    const auto* base = reinterpret_cast<const char*>(f.map_->data());
    const json header = parse_json(base + 8, base + 8 + header_len, "header");
    if (!header.is_object()) throw format_error("header is not a JSON object");
    const uint8_t* data = f.map_->data() + 8 + header_len;
    const uint64_t data_size = size - 8 - header_len;

    std::vector<std::pair<uint64_t, tensor_view>> views;
    for (const auto& [name, entry] : header.items()) {
      if (name == "__metadata__") {
        if (!entry.is_object()) throw format_error("__metadata__ is not an object");
        for (const auto& [k, v] : entry.items()) {
          if (!v.is_string()) {
            throw format_error("__metadata__ value of '" + k + "' is not a string");
          }
          f.metadata_.emplace(k, v.get<std::string>());
        }
        continue;
      }
      uint64_t begin = 0;
      tensor_view t = make_view(name, entry, data, data_size, begin);
      views.emplace_back(begin, std::move(t));
    }
    // File order (by offset); then no two tensors may share a byte.
    std::sort(views.begin(), views.end(), [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first < b.first : a.second.n_bytes < b.second.n_bytes;
    });
    for (size_t i = 1; i < views.size(); ++i) {
      const auto& prev = views[i - 1];
      if (prev.first + prev.second.n_bytes > views[i].first) {
        throw format_error("tensors '" + prev.second.name + "' and '" + views[i].second.name +
                           "' overlap (data_offsets begin " + std::to_string(prev.first) +
                           " and " + std::to_string(views[i].first) + ")");
      }
    }
    for (auto& [begin, t] : views) {
      f.index_.emplace(t.name, f.tensors_.size());
      f.tensors_.push_back(std::move(t));
    }
  } catch (const format_error& e) {
    throw format_error("safetensors '" + path + "': " + e.what());
  }
  return f;
}

const tensor_view* safetensors_file::find_tensor(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

safetensors_folder safetensors_folder::open(const std::string& dir) {
  namespace fs = std::filesystem;
  safetensors_folder f;
  f.dir_ = dir;
  const fs::path root(dir);
  f.config_ = read_json_file(root / "config.json");

  // Shard file names, in the order first named by the index (or the single file).
  std::vector<std::string> shard_names;
  json weight_map;
  const fs::path index_path = root / "model.safetensors.index.json";
  std::error_code ec;
  if (fs::exists(index_path, ec)) {
    const json index = read_json_file(index_path);
    const auto wm = index.find("weight_map");
    if (wm == index.end() || !wm->is_object()) {
      throw format_error("'" + index_path.string() + "': missing \"weight_map\" object");
    }
    weight_map = *wm;
    std::set<std::string> seen;
    for (const auto& [tensor, shard] : weight_map.items()) {
      if (!shard.is_string()) {
        throw format_error("'" + index_path.string() + "': shard of '" + tensor +
                           "' is not a string");
      }
      const std::string s = shard.get<std::string>();
      // Shards live in the folder itself: no paths that could point elsewhere.
      if (s.empty() || s.find('/') != std::string::npos || s == "." || s == "..") {
        throw format_error("'" + index_path.string() + "': shard name '" + s +
                           "' is not a plain file name");
      }
      if (seen.insert(s).second) shard_names.push_back(s);
    }
  } else if (fs::exists(root / "model.safetensors", ec)) {
    shard_names.push_back("model.safetensors");
  } else {
    throw format_error("'" + dir + "': neither model.safetensors.index.json nor " +
                       "model.safetensors found");
  }

  f.shards_.reserve(shard_names.size());
  for (const std::string& s : shard_names) {
    const fs::path p = root / s;
    if (!fs::is_regular_file(p, ec)) {
      throw format_error("'" + dir + "': shard '" + s + "' named by the index is missing");
    }
    f.shards_.push_back(safetensors_file::open(p.string()));
  }
  f.build_index();
  // Each tensor the index names must be in the shard it names.
  for (const auto& [tensor, shard] : weight_map.items()) {
    const size_t k = static_cast<size_t>(
        std::find(shard_names.begin(), shard_names.end(), shard.get<std::string>()) -
        shard_names.begin());
    if (f.shards_[k].find_tensor(tensor) == nullptr) {
      throw format_error("'" + dir + "': index puts tensor '" + tensor + "' in shard '" +
                         shard_names[k] + "', which does not contain it");
    }
  }
  return f;
}

safetensors_folder::safetensors_folder(const safetensors_folder& other)
    : dir_(other.dir_), config_(other.config_), shards_(other.shards_) {
  build_index();
}

safetensors_folder& safetensors_folder::operator=(const safetensors_folder& other) {
  if (this != &other) {
    dir_ = other.dir_;
    config_ = other.config_;
    shards_ = other.shards_;
    build_index();
  }
  return *this;
}

void safetensors_folder::build_index() {
  index_.clear();
  for (const safetensors_file& shard : shards_) {
    for (const tensor_view& t : shard.tensors()) {
      if (!index_.emplace(t.name, &t).second) {
        throw format_error("'" + dir_ + "': tensor '" + t.name +
                           "' appears in more than one shard");
      }
    }
  }
}

const tensor_view* safetensors_folder::find_tensor(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : it->second;
}

std::vector<const tensor_view*> safetensors_folder::tensors() const {
  std::vector<const tensor_view*> out;
  for (const safetensors_file& s : shards_) {
    for (const tensor_view& t : s.tensors()) out.push_back(&t);
  }
  return out;
}

}  // namespace dspark

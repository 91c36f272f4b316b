// Hugging Face safetensors: single files and model folders (config.json + *.safetensors,
// optionally sharded through model.safetensors.index.json). F32, F16 and BF16 tensors.
//
// The JSON header is bounds-checked (header length, dtype, shape product against byte range,
// ranges inside the file, no overlaps), so a corrupted file gives a format_error.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/mapped_file.h"
#include "models/formats/tensor_view.h"

namespace dspark {

class safetensors_file {
 public:
  static safetensors_file open(const std::string& path);

  const std::vector<tensor_view>& tensors() const { return tensors_; }
  const tensor_view* find_tensor(std::string_view name) const;
  // The optional "__metadata__" string map of the header.
  const std::unordered_map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  std::shared_ptr<mapped_file> map_;
  std::vector<tensor_view> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::unordered_map<std::string, std::string> metadata_;
};

// A Hugging Face model folder: config.json plus one or many safetensors shards.
class safetensors_folder {
 public:
  // Throws format_error when config.json is missing or invalid, a shard named by the index is
  // missing, or two shards hold the same tensor.
  static safetensors_folder open(const std::string& dir);

  safetensors_folder() = default;
  // Copies rebuild the name index so it points into the copy's own shards.
  safetensors_folder(const safetensors_folder& other);
  safetensors_folder& operator=(const safetensors_folder& other);
  safetensors_folder(safetensors_folder&&) = default;
  safetensors_folder& operator=(safetensors_folder&&) = default;

  const nlohmann::json& config() const { return config_; }
  const std::string& dir() const { return dir_; }
  const tensor_view* find_tensor(std::string_view name) const;
  std::vector<const tensor_view*> tensors() const;

 private:
  std::string dir_;
  nlohmann::json config_;
  std::vector<safetensors_file> shards_;
  std::unordered_map<std::string, const tensor_view*> index_;

  // Fills index_ from shards_; throws format_error when two shards hold the same tensor.
  void build_index();
};

}  // namespace dspark

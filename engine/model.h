// A loaded model: the weight file mapping, the config, the bound weights and the tokenizer,
// owned together so the views into the mapping stay valid as long as the model lives.
//
// load_model accepts a .gguf file or a Hugging Face folder (config.json + *.safetensors, with
// tokenizer.json / tokenizer_config.json beside them).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/arch/llama_weights.h"
#include "models/arch/model_config.h"
#include "models/formats/gguf.h"
#include "models/formats/safetensors.h"

namespace dspark {

class tokenizer;

struct model_load_options {
  bool load_tokenizer = true;  // false: weights only (tests of tokenizer-less folders)
};

class model {
 public:
  model(model&&) noexcept;
  model& operator=(model&&) noexcept;
  ~model();

  const model_config& config() const { return config_; }
  const llama_weights& weights() const { return weights_; }
  const std::string& path() const { return path_; }
  bool has_tokenizer() const { return tok_ != nullptr; }
  // The tokenizer; throws invalid_argument_error when the model was loaded without one.
  const dspark::tokenizer& tokenizer() const;
  // Ids that end generation: config EOS ids plus end-of-turn tokens the vocabulary knows.
  const std::vector<int32_t>& stop_ids() const { return stop_ids_; }

 private:
  friend model load_model(const std::string& path, const model_load_options& opt);
  model();

  std::string path_;
  // Exactly one of these holds the mapping the weights point into.
  std::optional<gguf_file> gguf_;
  std::optional<safetensors_folder> folder_;
  model_config config_;
  llama_weights weights_;
  std::shared_ptr<const dspark::tokenizer> tok_;  // shared_ptr: the type stays incomplete here
  std::vector<int32_t> stop_ids_;
};

// Loads a .gguf file or a Hugging Face folder. Throws format_error naming the path and the
// problem (missing file, unsupported architecture, bad tensor, bad tokenizer).
model load_model(const std::string& path, const model_load_options& opt = {});

}  // namespace dspark

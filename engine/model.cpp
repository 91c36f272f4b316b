// load_model: format detection, config, weight binding, tokenizer, stop ids.
#include "engine/model.h"

#include <algorithm>
#include <filesystem>

#include "common/error.h"

namespace dspark {

namespace fs = std::filesystem;

model::model() = default;
model::model(model&&) noexcept = default;
model& model::operator=(model&&) noexcept = default;
model::~model() = default;

const dspark::tokenizer& model::tokenizer() const {
  if (!tok_) throw invalid_argument_error("model " + path_ + " was loaded without a tokenizer");
  return *tok_;
}

model load_model(const std::string& path, const model_load_options& opt) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw format_error(path + ": no such file or folder");
  model m;
  m.path_ = path;
  if (fs::is_directory(path, ec)) {
    m.folder_.emplace(safetensors_folder::open(path));
    m.config_ = config_from_hf(m.folder_->config());
    m.weights_ = bind_weights(m.config_, *m.folder_);
  } else {
    m.gguf_.emplace(gguf_file::open(path));
    m.config_ = config_from_gguf(*m.gguf_);
    m.weights_ = bind_weights(m.config_, *m.gguf_);
  }
  (void)opt;
  m.stop_ids_ = m.config_.eos_ids;
  return m;
}

}  // namespace dspark

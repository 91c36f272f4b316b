// load_model: format detection, config, weight binding, tokenizer, stop ids.
#include "engine/model.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/tokenizer/tokenizer.h"

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

namespace {

// Chat models often list their end-of-turn ids only in generation_config.json.
void add_generation_config_eos(const std::string& dir, model_config& c) {
  const fs::path p = fs::path(dir) / "generation_config.json";
  std::error_code ec;
  if (!fs::exists(p, ec)) return;
  std::ifstream in(p);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object())
    throw format_error(p.string() + ": not a JSON object");
  const auto it = j.find("eos_token_id");
  if (it == j.end() || it->is_null()) return;
  std::vector<int64_t> ids;
  if (it->is_number_integer()) ids.push_back(it->get<int64_t>());
  else if (it->is_array())
    for (const auto& e : *it)
      if (e.is_number_integer()) ids.push_back(e.get<int64_t>());
  for (int64_t id : ids) {
    if (id < 0 || id >= c.n_vocab)
      throw format_error(p.string() + ": eos_token_id " + std::to_string(id) +
                         " outside the vocabulary [0, " + std::to_string(c.n_vocab) + ")");
    if (std::find(c.eos_ids.begin(), c.eos_ids.end(), id) == c.eos_ids.end())
      c.eos_ids.push_back(static_cast<int32_t>(id));
  }
}

}  // namespace

model load_model(const std::string& path, const model_load_options& opt) {
  std::error_code ec;
  if (!fs::exists(path, ec)) throw format_error(path + ": no such file or folder");
  model m;
  m.path_ = path;
  if (fs::is_directory(path, ec)) {
    m.folder_.emplace(safetensors_folder::open(path));
    m.config_ = config_from_hf(m.folder_->config());
    add_generation_config_eos(path, m.config_);
    m.weights_ = bind_weights(m.config_, *m.folder_);
  } else {
    m.gguf_.emplace(gguf_file::open(path));
    m.config_ = config_from_gguf(*m.gguf_);
    m.weights_ = bind_weights(m.config_, *m.gguf_);
  }
  if (opt.load_tokenizer) {
    if (m.gguf_) {
      m.tok_ = std::make_shared<const tokenizer>(tokenizer::from_gguf(*m.gguf_));
    } else {
      const fs::path dir(path);
      if (!fs::exists(dir / "tokenizer.json", ec))
        throw format_error(path + ": no tokenizer.json in the model folder");
      const fs::path cfg = dir / "tokenizer_config.json";
      m.tok_ = std::make_shared<const tokenizer>(tokenizer::from_hf_files(
          (dir / "tokenizer.json").string(), fs::exists(cfg, ec) ? cfg.string() : std::string()));
    }
    if (m.tok_->n_vocab() > m.config_.n_vocab)
      throw format_error(path + ": the tokenizer has " + std::to_string(m.tok_->n_vocab()) +
                         " tokens, more than the model's n_vocab " +
                         std::to_string(m.config_.n_vocab));
  }
  m.stop_ids_ = m.config_.eos_ids;
  if (m.tok_)
    for (int32_t id : m.tok_->stop_ids())
      if (std::find(m.stop_ids_.begin(), m.stop_ids_.end(), id) == m.stop_ids_.end())
        m.stop_ids_.push_back(id);
  std::sort(m.stop_ids_.begin(), m.stop_ids_.end());
  return m;
}

}  // namespace dspark

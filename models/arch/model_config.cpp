// model_config from GGUF metadata and from Hugging Face config.json.
#include "models/arch/model_config.h"

#include <algorithm>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/formats/gguf.h"

namespace dspark {

namespace {

constexpr const char* k_supported_gguf = "llama, mistral, qwen2, qwen3";
constexpr const char* k_supported_hf =
    "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM";

void add_unique(std::vector<int32_t>& ids, int64_t id) {
  if (id < 0) return;
  if (std::find(ids.begin(), ids.end(), static_cast<int32_t>(id)) == ids.end())
    ids.push_back(static_cast<int32_t>(id));
}

// ---- GGUF --------------------------------------------------------------------------------

int64_t gguf_required_int(const gguf_file& f, const std::string& key) {
  // Some converters write per-layer arrays (e.g. head_count_kv); accept them when uniform.
  const gguf_value* raw = f.find(key);
  if (raw && raw->type == gguf_type::array) {
    const auto* arr = f.get_ints(key);
    if (arr->empty()) throw format_error(f.path() + ": metadata " + key + " is an empty array");
    for (int64_t v : *arr)
      if (v != arr->front())
        throw format_error(f.path() + ": metadata " + key +
                           " varies per layer, which is not supported");
    return arr->front();
  }
  auto v = f.get_int(key);
  if (!v) throw format_error(f.path() + ": missing metadata key " + key);
  return *v;
}

model_arch gguf_arch(const gguf_file& f, const std::string& arch) {
  if (arch == "llama") return model_arch::llama;
  if (arch == "mistral") return model_arch::mistral;
  if (arch == "qwen2") return model_arch::qwen2;
  if (arch == "qwen3") return model_arch::qwen3;
  throw format_error(f.path() + ": unsupported architecture '" + arch +
                     "' (supported: " + k_supported_gguf + ")");
}

// Per-dimension RoPE divisors baked by llama.cpp's converter for Llama 3.1 scaling.
std::vector<float> gguf_rope_freqs(const gguf_file& f, int64_t n_rot) {
  const tensor_view* t = f.find_tensor("rope_freqs.weight");
  if (!t) return {};
  if (t->n_elements() != n_rot / 2)
    throw format_error(f.path() + ": tensor rope_freqs.weight has " +
                       std::to_string(t->n_elements()) + " elements, expected n_rot/2 = " +
                       std::to_string(n_rot / 2));
  std::vector<float> out(static_cast<size_t>(n_rot / 2));
  dequantize_row(t->type, t->data, out.data(), n_rot / 2);
  return out;
}

// ---- HF ----------------------------------------------------------------------------------

const nlohmann::json* hf_find(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

int64_t hf_int(const nlohmann::json& j, const char* key, std::optional<int64_t> fallback) {
  const auto* v = hf_find(j, key);
  if (!v) {
    if (fallback) return *fallback;
    throw format_error(std::string("config.json: missing key ") + key);
  }
  if (!v->is_number_integer())
    throw format_error(std::string("config.json: ") + key + " must be an integer, got " +
                       v->dump());
  return v->get<int64_t>();
}

double hf_float(const nlohmann::json& j, const char* key, double fallback) {
  const auto* v = hf_find(j, key);
  if (!v) return fallback;
  if (!v->is_number())
    throw format_error(std::string("config.json: ") + key + " must be a number, got " +
                       v->dump());
  return v->get<double>();
}

bool hf_bool(const nlohmann::json& j, const char* key, bool fallback) {
  const auto* v = hf_find(j, key);
  if (!v) return fallback;
  if (!v->is_boolean())
    throw format_error(std::string("config.json: ") + key + " must be a boolean, got " +
                       v->dump());
  return v->get<bool>();
}

// eos_token_id may be an integer or a list of integers.
void hf_token_ids(const nlohmann::json& j, const char* key, std::vector<int32_t>& out) {
  const auto* v = hf_find(j, key);
  if (!v) return;
  if (v->is_number_integer()) {
    add_unique(out, v->get<int64_t>());
  } else if (v->is_array()) {
    for (const auto& e : *v) {
      if (!e.is_number_integer())
        throw format_error(std::string("config.json: ") + key + " must hold integers, got " +
                           v->dump());
      add_unique(out, e.get<int64_t>());
    }
  } else {
    throw format_error(std::string("config.json: ") + key + " must be an integer or a list, got " +
                       v->dump());
  }
}

model_arch hf_arch(const nlohmann::json& j) {
  std::string name;
  if (const auto* a = hf_find(j, "architectures"); a && a->is_array() && !a->empty() &&
                                                   a->front().is_string())
    name = a->front().get<std::string>();
  if (name == "LlamaForCausalLM") return model_arch::llama;
  if (name == "MistralForCausalLM") return model_arch::mistral;
  if (name == "Qwen2ForCausalLM") return model_arch::qwen2;
  if (name == "Qwen3ForCausalLM") return model_arch::qwen3;
  throw format_error("config.json: unsupported architecture '" +
                     (name.empty() ? std::string("(none given)") : name) +
                     "' (supported: " + k_supported_hf + ")");
}

void hf_rope_scaling(const nlohmann::json& j, model_config& c) {
  const auto* s = hf_find(j, "rope_scaling");
  if (!s) return;
  if (!s->is_object()) throw format_error("config.json: rope_scaling must be an object");
  std::string type;
  if (const auto* t = hf_find(*s, "rope_type")) type = t->is_string() ? t->get<std::string>() : "";
  else if (const auto* t2 = hf_find(*s, "type")) type = t2->is_string() ? t2->get<std::string>() : "";
  if (type == "default") return;
  if (type != "llama3")
    throw format_error("config.json: rope_scaling type '" + type +
                       "' is not supported (supported: llama3)");
  rope_llama3_scaling r;
  r.factor = static_cast<float>(hf_float(*s, "factor", 8.0));
  r.low_freq_factor = static_cast<float>(hf_float(*s, "low_freq_factor", 1.0));
  r.high_freq_factor = static_cast<float>(hf_float(*s, "high_freq_factor", 4.0));
  r.original_max_positions = hf_int(*s, "original_max_position_embeddings", int64_t{8192});
  c.rope_scaling = r;
  if (r.factor <= 0 || r.high_freq_factor <= r.low_freq_factor || r.original_max_positions <= 0)
    throw format_error("config.json: rope_scaling needs factor > 0 and high_freq_factor > "
                       "low_freq_factor and original_max_position_embeddings > 0");
}

}  // namespace

std::string_view arch_name(model_arch a) {
  switch (a) {
    case model_arch::llama: return "llama";
    case model_arch::mistral: return "mistral";
    case model_arch::qwen2: return "qwen2";
    case model_arch::qwen3: return "qwen3";
  }
  return "unknown";
}

model_config config_from_gguf(const gguf_file& f) {
  const auto arch_str = f.get_string("general.architecture");
  if (!arch_str) throw format_error(f.path() + ": missing metadata key general.architecture");
  model_config c;
  c.arch = gguf_arch(f, *arch_str);
  c.name = f.get_string("general.name").value_or(*arch_str);
  const std::string p = *arch_str + ".";

  c.n_embd = gguf_required_int(f, p + "embedding_length");
  c.n_layer = gguf_required_int(f, p + "block_count");
  c.n_head = gguf_required_int(f, p + "attention.head_count");
  c.n_head_kv = f.find(p + "attention.head_count_kv") ? gguf_required_int(f, p + "attention.head_count_kv")
                                                      : c.n_head;
  c.n_ff = gguf_required_int(f, p + "feed_forward_length");
  c.n_ctx_train = gguf_required_int(f, p + "context_length");
  c.head_dim = f.get_int(p + "attention.key_length").value_or(c.n_head > 0 ? c.n_embd / c.n_head : 0);
  c.n_rot = f.get_int(p + "rope.dimension_count").value_or(c.head_dim);
  c.rope_theta = f.get_float(p + "rope.freq_base").value_or(10000.0);
  c.rms_eps = f.get_float(p + "attention.layer_norm_rms_epsilon").value_or(1e-5);
  if (auto v = f.get_int(p + "vocab_size")) {
    c.n_vocab = *v;
  } else if (const auto* toks = f.get_strings("tokenizer.ggml.tokens")) {
    c.n_vocab = static_cast<int64_t>(toks->size());
  } else if (const auto* emb = f.find_tensor("token_embd.weight"); emb && emb->shape.size() == 2) {
    c.n_vocab = emb->shape[0];
  }
  if (auto st = f.get_string(p + "rope.scaling.type"); st && *st != "none")
    throw format_error(f.path() + ": rope scaling type '" + *st +
                       "' is not supported (supported: none, or llama3 via rope_freqs.weight)");

  // The llama converter permutes Q/K rows for ggml's interleaved RoPE; qwen2/qwen3 do not.
  c.rope = (c.arch == model_arch::llama || c.arch == model_arch::mistral) ? rope_style::normal
                                                                        : rope_style::neox;
  c.rope_freq_factors = gguf_rope_freqs(f, c.n_rot);
  c.tied_embeddings = f.find_tensor("output.weight") == nullptr;
  c.qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.qk_norm = f.find_tensor("blk.0.attn_q_norm.weight") != nullptr;

  c.bos_id = static_cast<int32_t>(f.get_int("tokenizer.ggml.bos_token_id").value_or(-1));
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                          "tokenizer.ggml.eom_token_id"})
    if (auto id = f.get_int(key)) add_unique(c.eos_ids, *id);
  validate_config(c);
  return c;
}

model_config config_from_hf(const nlohmann::json& j) {
  if (!j.is_object()) throw format_error("config.json: top level must be an object");
  model_config c;
  c.arch = hf_arch(j);
  c.name = j["architectures"].front().get<std::string>();
  c.n_vocab = hf_int(j, "vocab_size", std::nullopt);
  c.n_embd = hf_int(j, "hidden_size", std::nullopt);
  c.n_layer = hf_int(j, "num_hidden_layers", std::nullopt);
  c.n_head = hf_int(j, "num_attention_heads", std::nullopt);
  c.n_head_kv = hf_int(j, "num_key_value_heads", c.n_head);
  c.head_dim = hf_int(j, "head_dim", c.n_head > 0 ? c.n_embd / c.n_head : 0);
  c.n_ff = hf_int(j, "intermediate_size", std::nullopt);
  c.n_ctx_train = hf_int(j, "max_position_embeddings", int64_t{4096});
  c.n_rot = c.head_dim;
  c.rope_theta = hf_float(j, "rope_theta", 10000.0);
  c.rope = rope_style::neox;
  hf_rope_scaling(j, c);
  c.rms_eps = hf_float(j, "rms_norm_eps", 1e-6);
  c.tied_embeddings = hf_bool(j, "tie_word_embeddings", false);
  c.qkv_bias = c.arch == model_arch::qwen2;
  c.qk_norm = c.arch == model_arch::qwen3;
  if (c.arch == model_arch::llama && hf_bool(j, "attention_bias", false))
    throw format_error("config.json: attention_bias = true is not supported for Llama");
  if (hf_bool(j, "use_sliding_window", false))
    throw format_error("config.json: use_sliding_window = true is not supported");
  if (const auto* dt = hf_find(j, "torch_dtype")) {
    const std::string s = dt->is_string() ? dt->get<std::string>() : dt->dump();
    if (s != "bfloat16" && s != "float16" && s != "float32")
      throw format_error("config.json: torch_dtype '" + s +
                         "' is not supported (supported: bfloat16, float16, float32)");
  }
  std::vector<int32_t> bos;
  hf_token_ids(j, "bos_token_id", bos);
  c.bos_id = bos.empty() ? -1 : bos.front();
  hf_token_ids(j, "eos_token_id", c.eos_ids);
  validate_config(c);
  return c;
}

void validate_config(const model_config& c) {
  auto positive = [](int64_t v, const char* field) {
    if (v <= 0) throw format_error(std::string("model config: ") + field + " must be > 0, got " +
                                   std::to_string(v));
  };
  positive(c.n_vocab, "n_vocab");
  positive(c.n_embd, "n_embd");
  positive(c.n_layer, "n_layer");
  positive(c.n_head, "n_head");
  positive(c.n_head_kv, "n_head_kv");
  positive(c.head_dim, "head_dim");
  positive(c.n_ff, "n_ff");
  positive(c.n_ctx_train, "n_ctx_train");
  if (c.n_head % c.n_head_kv != 0)
    throw format_error("model config: n_head (" + std::to_string(c.n_head) +
                       ") must be a multiple of n_head_kv (" + std::to_string(c.n_head_kv) + ")");
  // Partial rotary embeddings (n_rot < head_dim) belong to architectures we do not support.
  if (c.n_rot != c.head_dim || c.head_dim % 2 != 0)
    throw format_error("model config: the RoPE dimension count (" + std::to_string(c.n_rot) +
                       ") must equal head_dim (" + std::to_string(c.head_dim) + ") and be even");
  if (!(c.rope_theta > 0)) throw format_error("model config: rope_theta must be > 0");
  if (!(c.rms_eps > 0)) throw format_error("model config: rms_eps must be > 0");
  for (int32_t id : c.eos_ids)
    if (id >= c.n_vocab)
      throw format_error("model config: eos id " + std::to_string(id) + " is outside the vocab [0, " +
                         std::to_string(c.n_vocab) + ")");
}

}  // namespace dspark

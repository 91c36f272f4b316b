// Binding of Llama-family weights by name, with shape and dtype validation.
#include "models/arch/llama_weights.h"

#include <functional>
#include <string>

#include "common/error.h"
#include "models/formats/gguf.h"
#include "models/formats/safetensors.h"

namespace dspark {

namespace {

// One weight file format: where tensors are found and what each role is called.
struct tensor_source {
  std::string origin;  // the path, for messages
  std::function<const tensor_view*(const std::string&)> find;
  std::function<std::string(int layer, const std::string& role)> layer_name;
  std::string embd, norm, output;
};

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

const tensor_view& require(const tensor_source& src, const std::string& name,
                           const std::vector<int64_t>& shape) {
  const tensor_view* t = src.find(name);
  if (!t) throw format_error(src.origin + ": missing tensor " + name);
  if (t->shape != shape)
    throw format_error(src.origin + ": tensor " + name + " has shape " + shape_str(t->shape) +
                       ", expected " + shape_str(shape));
  if (t->row_length() % traits(t->type).block_size != 0)
    throw format_error(src.origin + ": tensor " + name + " rows of " +
                       std::to_string(t->row_length()) + " elements are not a whole number of " +
                       std::string(traits(t->type).name) + " blocks");
  return *t;
}

// A small vector (norm gain, bias) converted to float32.
std::vector<float> require_vector(const tensor_source& src, const std::string& name, int64_t n) {
  const tensor_view& t = require(src, name, {n});
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row(t.type, t.data, out.data(), n);
  return out;
}

layer_weights bind_layer(const model_config& c, const tensor_source& src, int il) {
  auto name = [&](const char* role) { return src.layer_name(il, role); };
  layer_weights l;
  l.attn_norm = require_vector(src, name("attn_norm"), c.n_embd);
  l.wq = require(src, name("q"), {c.q_dim(), c.n_embd});
  l.wk = require(src, name("k"), {c.kv_dim(), c.n_embd});
  l.wv = require(src, name("v"), {c.kv_dim(), c.n_embd});
  l.wo = require(src, name("o"), {c.n_embd, c.q_dim()});
  if (c.qkv_bias) {
    l.bq = require_vector(src, name("q_bias"), c.q_dim());
    l.bk = require_vector(src, name("k_bias"), c.kv_dim());
    l.bv = require_vector(src, name("v_bias"), c.kv_dim());
  }
  if (c.qk_norm) {
    l.q_norm = require_vector(src, name("q_norm"), c.head_dim);
    l.k_norm = require_vector(src, name("k_norm"), c.head_dim);
  }
  l.ffn_norm = require_vector(src, name("ffn_norm"), c.n_embd);
  l.w_gate = require(src, name("gate"), {c.n_ff, c.n_embd});
  l.w_up = require(src, name("up"), {c.n_ff, c.n_embd});
  l.w_down = require(src, name("down"), {c.n_embd, c.n_ff});
  return l;
}

llama_weights bind(const model_config& c, const tensor_source& src) {
  llama_weights w;
  w.token_embd = require(src, src.embd, {c.n_vocab, c.n_embd});
  w.output_norm = require_vector(src, src.norm, c.n_embd);
  w.output = c.tied_embeddings ? w.token_embd : require(src, src.output, {c.n_vocab, c.n_embd});
  w.layers.reserve(static_cast<size_t>(c.n_layer));
  for (int il = 0; il < c.n_layer; ++il) w.layers.push_back(bind_layer(c, src, il));
  return w;
}

std::string gguf_layer_name(int il, const std::string& role) {
  static const std::pair<const char*, const char*> k_map[] = {
      {"attn_norm", "attn_norm.weight"}, {"q", "attn_q.weight"},
      {"k", "attn_k.weight"},            {"v", "attn_v.weight"},
      {"o", "attn_output.weight"},       {"q_bias", "attn_q.bias"},
      {"k_bias", "attn_k.bias"},         {"v_bias", "attn_v.bias"},
      {"q_norm", "attn_q_norm.weight"},  {"k_norm", "attn_k_norm.weight"},
      {"ffn_norm", "ffn_norm.weight"},   {"gate", "ffn_gate.weight"},
      {"up", "ffn_up.weight"},           {"down", "ffn_down.weight"},
  };
  for (const auto& [r, n] : k_map)
    if (role == r) return "blk." + std::to_string(il) + "." + n;
  return role;  // unreachable: roles are fixed above
}

std::string hf_layer_name(int il, const std::string& role) {
  static const std::pair<const char*, const char*> k_map[] = {
      {"attn_norm", "input_layernorm.weight"}, {"q", "self_attn.q_proj.weight"},
      {"k", "self_attn.k_proj.weight"},        {"v", "self_attn.v_proj.weight"},
      {"o", "self_attn.o_proj.weight"},        {"q_bias", "self_attn.q_proj.bias"},
      {"k_bias", "self_attn.k_proj.bias"},     {"v_bias", "self_attn.v_proj.bias"},
      {"q_norm", "self_attn.q_norm.weight"},   {"k_norm", "self_attn.k_norm.weight"},
      {"ffn_norm", "post_attention_layernorm.weight"}, {"gate", "mlp.gate_proj.weight"},
      {"up", "mlp.up_proj.weight"},            {"down", "mlp.down_proj.weight"},
  };
  for (const auto& [r, n] : k_map)
    if (role == r) return "model.layers." + std::to_string(il) + "." + n;
  return role;
}

}  // namespace

llama_weights bind_weights(const model_config& c, const gguf_file& f) {
  tensor_source src;
  src.origin = f.path();
  src.find = [&f](const std::string& n) { return f.find_tensor(n); };
  src.layer_name = gguf_layer_name;
  src.embd = "token_embd.weight";
  src.norm = "output_norm.weight";
  src.output = "output.weight";
  return bind(c, src);
}

llama_weights bind_weights(const model_config& c, const safetensors_folder& f) {
  tensor_source src;
  src.origin = f.dir();
  src.find = [&f](const std::string& n) { return f.find_tensor(n); };
  src.layer_name = hf_layer_name;
  src.embd = "model.embed_tokens.weight";
  src.norm = "model.norm.weight";
  src.output = "lm_head.weight";
  return bind(c, src);
}

}  // namespace dspark

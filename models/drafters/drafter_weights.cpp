// Drafter weight loading: gather the folder's tensors, check them against the table, convert.
#include "models/drafters/drafter_weights.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/formats/fp16.h"
#include "models/formats/safetensors.h"

namespace dspark {

namespace {

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// The weight files of the folder: model.safetensors, or the shards its index names.
std::vector<safetensors_file> open_shards(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<safetensors_file> files;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(single)) {
    files.push_back(safetensors_file::open(single.string()));
    return files;
  }
  if (!fs::exists(index))
    throw format_error("drafter: " + dir + " has neither model.safetensors nor model.safetensors.index.json");
  std::ifstream in(index);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw format_error(index.string() + ": not valid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    throw format_error(index.string() + ": no weight_map object");
  std::set<std::string> shard_names;
  for (const auto& [name, file] : j["weight_map"].items()) {
    if (!file.is_string()) throw format_error(index.string() + ": weight_map[" + name + "] is not a file name");
    const std::string f = file.get<std::string>();
    if (f.find('/') != std::string::npos || f.find("..") != std::string::npos)
      throw format_error(index.string() + ": shard name '" + f + "' must be a plain file name");
    shard_names.insert(f);
  }
  for (const std::string& f : shard_names) {
    const fs::path p = fs::path(dir) / f;
    if (!fs::exists(p)) throw format_error("drafter: shard " + p.string() + " named by the index is missing");
    files.push_back(safetensors_file::open(p.string()));
  }
  return files;
}

host_tensor convert(const tensor_view& v) {
  host_tensor t;
  t.shape = v.shape;
  const int64_t n = v.n_elements();
  t.data.resize(static_cast<size_t>(n));
  if (v.type == dtype::f32) {
    const auto* src = reinterpret_cast<const float*>(v.data);
    std::copy(src, src + n, t.data.begin());
  } else if (v.type == dtype::bf16) {
    const auto* src = reinterpret_cast<const uint16_t*>(v.data);
    for (int64_t i = 0; i < n; ++i) t.data[static_cast<size_t>(i)] = bf16_to_fp32(src[i]);
  } else {
    throw format_error("drafter: tensor " + v.name + " is " + std::string(traits(v.type).name) + "; expected F32 or BF16");
  }
  return t;
}

}  // namespace

tensor_view host_tensor::view() const {
  tensor_view v;
  v.type = dtype::f32;
  v.shape = shape;
  v.data = reinterpret_cast<const uint8_t*>(data.data());
  v.n_bytes = data.size() * sizeof(float);
  return v;
}

std::vector<std::pair<std::string, std::vector<int64_t>>> expected_drafter_tensors(const drafter_config& c) {
  const int64_t d = c.n_embd, hd = c.head_dim, din = c.attn_in(), r = c.markov_rank;
  const int64_t V = c.target_n_vocab;
  std::vector<std::pair<std::string, std::vector<int64_t>>> e;
  e.push_back({"fc.weight", {d, c.feature_width()}});
  e.push_back({"hidden_norm.weight", {d}});
  if (!c.block_drafter()) e.push_back({"input_norm.weight", {d}});
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    if (c.block_drafter()) e.push_back({p + "attn_norm.weight", {d}});
    e.push_back({p + "attn_q.weight", {c.n_head * hd, din}});
    e.push_back({p + "attn_k.weight", {c.n_head_kv * hd, din}});
    e.push_back({p + "attn_v.weight", {c.n_head_kv * hd, din}});
    e.push_back({p + "attn_output.weight", {d, c.n_head * hd}});
    if (c.qk_norm) {
      e.push_back({p + "attn_q_norm.weight", {hd}});
      e.push_back({p + "attn_k_norm.weight", {hd}});
    }
    e.push_back({p + "ffn_norm.weight", {d}});
    e.push_back({p + "ffn_gate.weight", {c.n_ff, d}});
    e.push_back({p + "ffn_up.weight", {c.n_ff, d}});
    e.push_back({p + "ffn_down.weight", {d, c.n_ff}});
  }
  e.push_back({"norm.weight", {d}});
  if (c.markov != markov_kind::none) {
    e.push_back({"markov.w1.weight", {V, r}});
    e.push_back({"markov.w2.weight", {V, r}});
  }
  if (c.markov == markov_kind::rnn) {
    e.push_back({"rnn.weight", {3 * r, 2 * r + d}});
    e.push_back({"rnn.bias", {3 * r}});
  }
  if (c.confidence) {
    e.push_back({"confidence.weight", {1, d + r}});
    e.push_back({"confidence.bias", {1}});
  }
  return e;
}

drafter_weights load_drafter_weights(const std::string& dir, const drafter_config& c) {
  const std::vector<safetensors_file> files = open_shards(dir);
  std::map<std::string, const tensor_view*> have;
  for (const safetensors_file& f : files)
    for (const tensor_view& t : f.tensors())
      if (!have.emplace(t.name, &t).second) throw format_error("drafter: tensor " + t.name + " appears in two shards");
  std::map<std::string, host_tensor> got;
  for (const auto& [name, shape] : expected_drafter_tensors(c)) {
    const auto it = have.find(name);
    if (it == have.end())
      throw format_error("drafter: missing tensor " + name + " " + shape_str(shape) + " (kind " +
                         drafter_kind_name(c.kind) + ")");
    if (it->second->shape != shape)
      throw format_error("drafter: tensor " + name + " has shape " + shape_str(it->second->shape) + ", expected " +
                         shape_str(shape));
    got.emplace(name, convert(*it->second));
    have.erase(it);
  }
  if (!have.empty())
    throw format_error("drafter: unexpected tensor " + have.begin()->first + " for kind " + drafter_kind_name(c.kind) +
                       " (" + std::to_string(have.size()) + " extra in all)");
  auto take = [&](const std::string& n) -> host_tensor {
    const auto it = got.find(n);
    return it == got.end() ? host_tensor{} : std::move(it->second);
  };
  drafter_weights w;
  w.fc = take("fc.weight");
  w.hidden_norm = take("hidden_norm.weight");
  w.input_norm = take("input_norm.weight");
  for (int64_t i = 0; i < c.n_layer; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    drafter_layer_weights l;
    l.attn_norm = take(p + "attn_norm.weight");
    l.wq = take(p + "attn_q.weight");
    l.wk = take(p + "attn_k.weight");
    l.wv = take(p + "attn_v.weight");
    l.wo = take(p + "attn_output.weight");
    l.q_norm = take(p + "attn_q_norm.weight");
    l.k_norm = take(p + "attn_k_norm.weight");
    l.ffn_norm = take(p + "ffn_norm.weight");
    l.w_gate = take(p + "ffn_gate.weight");
    l.w_up = take(p + "ffn_up.weight");
    l.w_down = take(p + "ffn_down.weight");
    w.layers.push_back(std::move(l));
  }
  w.norm = take("norm.weight");
  w.markov_w1 = take("markov.w1.weight");
  w.markov_w2 = take("markov.w2.weight");
  w.rnn_w = take("rnn.weight");
  w.rnn_b = take("rnn.bias");
  w.conf_w = take("confidence.weight");
  w.conf_b = take("confidence.bias");
  return w;
}

}  // namespace dspark

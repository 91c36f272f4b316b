// drafter.json parsing: one accessor per JSON type, each naming the field on error.
#include "models/drafters/drafter_config.h"

#include <cmath>
#include <fstream>
#include <set>
#include <string>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/arch/model_config.h"

namespace dspark {

namespace {

using nlohmann::json;

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw format_error("drafter.json: " + path + ": " + what);
}

const json& field(const json& obj, const std::string& parent, const char* key) {
  const std::string path = parent.empty() ? key : parent + "." + key;
  if (!obj.is_object()) fail(parent.empty() ? "(top level)" : parent, "expected an object");
  const auto it = obj.find(key);
  if (it == obj.end()) fail(path, "missing");
  return *it;
}

int64_t get_int(const json& obj, const std::string& parent, const char* key, int64_t lo, int64_t hi) {
  const json& v = field(obj, parent, key);
  const std::string path = parent.empty() ? key : parent + "." + key;
  if (!v.is_number_integer()) fail(path, "expected an integer, got " + v.dump());
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    fail(path, std::to_string(x) + " out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

double get_num(const json& obj, const std::string& parent, const char* key, double lo, double hi) {
  const json& v = field(obj, parent, key);
  const std::string path = parent.empty() ? key : parent + "." + key;
  if (!v.is_number()) fail(path, "expected a number, got " + v.dump());
  const double x = v.get<double>();
  if (!(x >= lo && x <= hi))
    fail(path, std::to_string(x) + " out of range [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return x;
}

std::string get_str(const json& obj, const std::string& parent, const char* key) {
  const json& v = field(obj, parent, key);
  if (!v.is_string()) fail(parent.empty() ? key : parent + "." + key, "expected a string, got " + v.dump());
  return v.get<std::string>();
}

bool get_bool(const json& obj, const std::string& parent, const char* key) {
  const json& v = field(obj, parent, key);
  if (!v.is_boolean()) fail(parent.empty() ? key : parent + "." + key, "expected true or false, got " + v.dump());
  return v.get<bool>();
}

constexpr int64_t kMaxDim = int64_t{1} << 20;  // any sane width, vocabulary or depth

std::optional<rope_llama3_scaling> parse_rope_scaling(const json& v) {
  if (v.is_null()) return std::nullopt;
  if (!v.is_object()) fail("rope_scaling", "expected null or an object, got " + v.dump());
  const std::string type = get_str(v, "rope_scaling", "rope_type");
  if (type != "llama3") fail("rope_scaling.rope_type", "only \"llama3\" is supported, got \"" + type + "\"");
  rope_llama3_scaling s;
  s.factor = static_cast<float>(get_num(v, "rope_scaling", "factor", 1e-6, 1e6));
  s.low_freq_factor = static_cast<float>(get_num(v, "rope_scaling", "low_freq_factor", 1e-6, 1e6));
  s.high_freq_factor = static_cast<float>(get_num(v, "rope_scaling", "high_freq_factor", 1e-6, 1e6));
  s.original_max_positions = get_int(v, "rope_scaling", "original_max_position_embeddings", 1, int64_t{1} << 31);
  if (!(s.high_freq_factor > s.low_freq_factor))
    fail("rope_scaling", "high_freq_factor must exceed low_freq_factor");
  return s;
}

void parse_markov(const json& j, drafter_config& c) {
  const std::string type = get_str(j, "markov", "type");
  if (type == "none") c.markov = markov_kind::none;
  else if (type == "vanilla") c.markov = markov_kind::vanilla;
  else if (type == "rnn") c.markov = markov_kind::rnn;
  else fail("markov.type", "expected none, vanilla or rnn, got \"" + type + "\"");
  if (c.markov != markov_kind::none) c.markov_rank = get_int(j, "markov", "rank", 1, kMaxDim);
}

void parse_confidence(const json& j, drafter_config& c) {
  c.confidence = get_bool(j, "confidence", "enabled");
  if (!c.confidence) return;
  const json& t = field(j, "confidence", "temperatures");
  if (!t.is_array() || static_cast<int64_t>(t.size()) != c.block_size)
    fail("confidence.temperatures", "expected an array of block_size = " + std::to_string(c.block_size) +
                                        " positive numbers, got " + t.dump());
  for (const json& x : t) {
    if (!x.is_number() || !(x.get<double>() > 0.0) || !std::isfinite(x.get<double>()))
      fail("confidence.temperatures", "every temperature must be a positive number, got " + x.dump());
    c.confidence_temperatures.push_back(x.get<float>());
  }
}

}  // namespace

const char* drafter_kind_name(drafter_kind k) {
  switch (k) {
    case drafter_kind::dspark: return "dspark";
    case drafter_kind::dflash: return "dflash";
    case drafter_kind::eagle3: return "eagle3";
    case drafter_kind::mtp1: return "mtp1";
  }
  return "?";
}

std::optional<drafter_kind> parse_drafter_kind(const std::string& name) {
  for (drafter_kind k : {drafter_kind::dspark, drafter_kind::dflash, drafter_kind::eagle3, drafter_kind::mtp1})
    if (name == drafter_kind_name(k)) return k;
  return std::nullopt;
}

drafter_config parse_drafter_config(const json& j) {
  if (!j.is_object()) fail("(top level)", "expected an object");
  if (get_str(j, "", "format") != "dspark-drafter")
    fail("format", "expected \"dspark-drafter\", got " + j["format"].dump());
  get_int(j, "", "format_version", 1, 1);
  drafter_config c;
  const std::string kind = get_str(j, "", "kind");
  const auto k = parse_drafter_kind(kind);
  if (!k) fail("kind", "expected dspark, dflash, eagle3 or mtp1, got \"" + kind + "\"");
  c.kind = *k;

  const json& t = field(j, "", "target");
  c.target_n_vocab = get_int(t, "target", "n_vocab", 1, int64_t{1} << 24);
  c.target_n_embd = get_int(t, "target", "n_embd", 1, kMaxDim);
  c.target_n_layer = get_int(t, "target", "n_layer", 1, 4096);
  c.target_name = get_str(t, "target", "name");

  const json& tl = field(j, "", "target_layers");
  if (!tl.is_array() || tl.empty()) fail("target_layers", "expected a non-empty array of layer indices");
  std::set<int64_t> seen;
  for (const json& x : tl) {
    if (!x.is_number_integer()) fail("target_layers", "expected integers, got " + x.dump());
    const int64_t l = x.get<int64_t>();
    if (l < 0 || l >= c.target_n_layer)
      fail("target_layers", "layer " + std::to_string(l) + " outside [0, target.n_layer = " +
                                std::to_string(c.target_n_layer) + ")");
    if (!seen.insert(l).second) fail("target_layers", "layer " + std::to_string(l) + " listed twice");
    if (l == c.target_n_layer - 1 && c.kind != drafter_kind::mtp1)
      fail("target_layers", "the last target layer may be listed only by mtp1");
    c.target_layers.push_back(static_cast<int32_t>(l));
  }
  c.block_size = static_cast<int32_t>(get_int(j, "", "block_size", 1, 64));

  c.n_layer = get_int(j, "", "n_layer", 1, 256);
  c.n_embd = get_int(j, "", "n_embd", 1, kMaxDim);
  c.n_head = get_int(j, "", "n_head", 1, 4096);
  c.n_head_kv = get_int(j, "", "n_head_kv", 1, 4096);
  c.head_dim = get_int(j, "", "head_dim", 2, 512);
  c.n_ff = get_int(j, "", "n_ff", 1, kMaxDim);
  c.rms_eps = get_num(j, "", "rms_eps", 0.0, 1.0);
  c.rope_theta = get_num(j, "", "rope_theta", 1e-6, 1e12);
  c.rope_scaling = parse_rope_scaling(field(j, "", "rope_scaling"));
  c.qk_norm = get_bool(j, "", "qk_norm");
  if (c.n_embd != c.target_n_embd)
    fail("n_embd", std::to_string(c.n_embd) + " differs from target.n_embd = " + std::to_string(c.target_n_embd));
  if (c.n_head % c.n_head_kv != 0)
    fail("n_head_kv", std::to_string(c.n_head_kv) + " does not divide n_head = " + std::to_string(c.n_head));
  if (c.head_dim % 2 != 0) fail("head_dim", "must be even (RoPE pairs), got " + std::to_string(c.head_dim));

  if (c.block_drafter()) {
    c.mask_token_id = static_cast<int32_t>(get_int(j, "", "mask_token_id", 0, c.target_n_vocab - 1));
    parse_markov(field(j, "", "markov"), c);
    parse_confidence(field(j, "", "confidence"), c);
    if (c.kind == drafter_kind::dflash && c.markov != markov_kind::none)
      fail("markov.type", "dflash has no sequential head: expected none");
  } else {
    // eagle3/mtp1 carry no Markov or confidence tensors; the fields may be absent.
    if (j.contains("markov")) parse_markov(j["markov"], c);
    if (j.contains("confidence")) parse_confidence(j["confidence"], c);
    if (c.markov != markov_kind::none) fail("markov.type", "eagle3/mtp1 have no Markov head: expected none");
    if (c.confidence) fail("confidence.enabled", "eagle3/mtp1 have no confidence head: expected false");
    if (c.n_layer != 1) fail("n_layer", "eagle3/mtp1 have exactly one layer, got " + std::to_string(c.n_layer));
  }
  if (c.kind == drafter_kind::mtp1) {
    if (c.block_size != 1) fail("block_size", "mtp1 drafts a chain of 1, got " + std::to_string(c.block_size));
    if (c.target_layers != std::vector<int32_t>{static_cast<int32_t>(c.target_n_layer - 1)})
      fail("target_layers", "mtp1 reads exactly the last target layer [" + std::to_string(c.target_n_layer - 1) + "]");
  }
  if (j.contains("training") && !j["training"].is_object()) fail("training", "expected an object");
  return c;
}

drafter_config load_drafter_config(const std::string& dir) {
  const std::string path = dir + "/drafter.json";
  std::ifstream in(path);
  if (!in) throw format_error("drafter: cannot open " + path + " (is '" + dir + "' a drafter folder?)");
  json j;
  try {
    j = json::parse(in);
  } catch (const json::exception& e) {
    throw format_error(path + ": not valid JSON: " + e.what());
  }
  return parse_drafter_config(j);
}

void check_drafter_target(const drafter_config& d, const model_config& t) {
  auto differ = [&](const char* what, int64_t want, int64_t got) {
    throw invalid_argument_error(std::string("drafter: trained for a target with ") + what + " = " +
                                 std::to_string(want) + " (" + d.target_name + "), but the model has " +
                                 std::to_string(got));
  };
  if (d.target_n_vocab != t.n_vocab) differ("n_vocab", d.target_n_vocab, t.n_vocab);
  if (d.target_n_embd != t.n_embd) differ("n_embd", d.target_n_embd, t.n_embd);
  if (d.target_n_layer != t.n_layer) differ("n_layer", d.target_n_layer, t.n_layer);
}

}  // namespace dspark

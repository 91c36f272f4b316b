// tokenizer::from_hf_files: Hugging Face tokenizer.json (+ tokenizer_config.json).
//
// Supported, which covers GPT-2, Llama 3, Qwen2/2.5/3 and SmolLM2 files:
//   model           BPE with vocab, merges ("a b" strings or [a, b] pairs), ignore_merges
//   added_tokens    special -> control tokens, others -> user-defined (always matched)
//   pre_tokenizer   Sequence of Split(Regex|String, behavior, invert), ByteLevel(use_regex,
//                   add_prefix_space=false), Digits(individual_digits); or null
//   normalizer      null or NFC. NFC is not applied: text is assumed to be NFC already, which
//                   chat prompts nearly always are (a documented limitation)
//   decoder         ByteLevel
//   post_processor  null, ByteLevel, TemplateProcessing (a leading special token = add BOS)
// Anything else is a format_error naming the unsupported part, never a silently wrong encoding.
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/tokenizer/tokenizer.h"

namespace dspark {
namespace {

using json = nlohmann::json;

[[noreturn]] void fail(const std::string& what) { throw format_error("tokenizer.json: " + what); }

const json& member(const json& obj, const char* key, const char* where) {
  if (!obj.is_object() || !obj.contains(key)) fail(std::string(where) + " has no '" + key + "'");
  return obj.at(key);
}

bool optional_bool(const json& obj, const char* key, bool fallback) {
  if (!obj.contains(key) || obj.at(key).is_null()) return fallback;
  if (!obj.at(key).is_boolean()) fail(std::string("'") + key + "' is not a boolean");
  return obj.at(key).get<bool>();
}

std::string string_of(const json& v, const char* what) {
  if (!v.is_string()) fail(std::string(what) + " is not a string");
  return v.get<std::string>();
}

split_behavior parse_behavior(const json& v) {
  const std::string b = string_of(v, "Split.behavior");
  if (b == "Isolated") return split_behavior::isolated;
  if (b == "Removed") return split_behavior::removed;
  if (b == "MergedWithPrevious") return split_behavior::merged_with_previous;
  if (b == "MergedWithNext") return split_behavior::merged_with_next;
  if (b == "Contiguous") return split_behavior::contiguous;
  fail("unknown Split behavior '" + b + "'");
}

void parse_pre_tokenizer(const json& pt, std::vector<pre_tokenizer_step>& steps, int depth) {
  if (pt.is_null()) return;
  if (depth > 8) fail("pre_tokenizer Sequences nest too deeply");
  const std::string type = string_of(member(pt, "type", "pre_tokenizer"), "pre_tokenizer.type");
  if (type == "Sequence") {
    const json& list = member(pt, "pretokenizers", "Sequence");
    if (!list.is_array()) fail("Sequence.pretokenizers is not an array");
    for (const json& p : list) parse_pre_tokenizer(p, steps, depth + 1);
  } else if (type == "ByteLevel") {
    if (optional_bool(pt, "add_prefix_space", false)) fail("ByteLevel add_prefix_space=true is not supported");
    if (optional_bool(pt, "use_regex", true)) steps.push_back(pre_tokenizer::gpt2_step());
  } else if (type == "Digits") {
    steps.push_back(pre_tokenizer::digits_step(optional_bool(pt, "individual_digits", false)));
  } else if (type == "Split") {
    const json& pattern = member(pt, "pattern", "Split");
    pre_tokenizer_step s;
    if (pattern.is_object() && pattern.contains("Regex")) {
      s.pattern = std::make_shared<const regex>(string_of(pattern.at("Regex"), "Split.pattern.Regex"));
    } else if (pattern.is_object() && pattern.contains("String")) {
      s.pattern = std::make_shared<const regex>(string_of(pattern.at("String"), "Split.pattern.String"), true);
    } else {
      fail("Split.pattern is neither {\"Regex\": ...} nor {\"String\": ...}");
    }
    s.behavior = parse_behavior(member(pt, "behavior", "Split"));
    s.invert = optional_bool(pt, "invert", false);
    steps.push_back(std::move(s));
  } else {
    fail("pre_tokenizer type '" + type + "' is not supported (byte-level BPE only)");
  }
}

// Token id of a config entry that is a string, {"content": string} or null.
int32_t config_token_id(const json& v, const tokenizer_spec& spec, const char* key) {
  if (v.is_null()) return -1;
  const std::string content = v.is_object() && v.contains("content") ? string_of(v.at("content"), key)
                                                                      : string_of(v, key);
  for (size_t i = 0; i < spec.pieces.size(); ++i) {
    if (spec.pieces[i] == content) return int32_t(i);
  }
  throw format_error(std::string("tokenizer_config.json: ") + key + " '" + content + "' is not a token");
}

void apply_config(const json& cfg, tokenizer_spec& spec) {
  if (!cfg.is_object()) throw format_error("tokenizer_config.json: not a JSON object");
  if (cfg.contains("bos_token")) spec.bos_id = config_token_id(cfg.at("bos_token"), spec, "bos_token");
  if (cfg.contains("eos_token")) spec.eos_id = config_token_id(cfg.at("eos_token"), spec, "eos_token");
  if (cfg.contains("unk_token")) spec.unk_id = config_token_id(cfg.at("unk_token"), spec, "unk_token");
  if (cfg.contains("pad_token")) spec.pad_id = config_token_id(cfg.at("pad_token"), spec, "pad_token");
  if (cfg.contains("add_bos_token") && !cfg.at("add_bos_token").is_null()) {
    if (!cfg.at("add_bos_token").is_boolean()) throw format_error("tokenizer_config.json: add_bos_token is not a boolean");
    spec.add_bos = cfg.at("add_bos_token").get<bool>();
  }
  if (cfg.contains("chat_template")) {
    const json& ct = cfg.at("chat_template");
    if (ct.is_string()) {
      spec.chat_template = ct.get<std::string>();
    } else if (ct.is_array()) {  // named templates: take "default"
      for (const json& e : ct) {
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template") && e.at("template").is_string()) {
          spec.chat_template = e.at("template").get<std::string>();
        }
      }
    } else if (!ct.is_null()) {
      throw format_error("tokenizer_config.json: chat_template is neither a string nor a list");
    }
  }
}

int32_t checked_id(const json& v, size_t limit, const std::string& what) {
  if (!v.is_number_integer()) fail(what + " has a non-integer id");
  const int64_t id = v.get<int64_t>();
  if (id < 0 || uint64_t(id) >= limit) fail(what + " has id " + std::to_string(id) + " outside [0, " + std::to_string(limit) + ")");
  return int32_t(id);
}

void parse_model(const json& root, tokenizer_spec& spec) {
  const json& model = member(root, "model", "tokenizer.json");
  if (model.contains("type") && string_of(model.at("type"), "model.type") != "BPE") {
    fail("model type '" + model.at("type").get<std::string>() + "' is not supported (BPE only)");
  }
  if (optional_bool(model, "byte_fallback", false)) fail("BPE byte_fallback is not supported");
  for (const char* affix : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(affix) && !model.at(affix).is_null() && model.at(affix) != "") {
      fail(std::string("BPE ") + affix + " is not supported");
    }
  }
  spec.ignore_merges = optional_bool(model, "ignore_merges", false);
  const json& vocab = member(model, "vocab", "model");
  const json& added = root.contains("added_tokens") ? root.at("added_tokens") : json::array();
  if (!vocab.is_object()) fail("model.vocab is not an object");
  if (!added.is_array()) fail("added_tokens is not an array");
  // Ids may leave small gaps; a bound keeps a corrupt id from allocating gigabytes.
  const size_t limit = vocab.size() + added.size() + 65536;
  std::vector<bool> seen;
  auto place = [&](int32_t id, const std::string& piece, token_kind kind, bool may_replace) {
    if (size_t(id) >= spec.pieces.size()) {
      spec.pieces.resize(size_t(id) + 1);
      spec.kinds.resize(size_t(id) + 1, token_kind::unused);
      seen.resize(size_t(id) + 1, false);
    }
    if (seen[size_t(id)] && !may_replace) fail("id " + std::to_string(id) + " is used by two vocab entries");
    seen[size_t(id)] = true;
    spec.pieces[size_t(id)] = piece;
    spec.kinds[size_t(id)] = kind;
  };
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    place(checked_id(it.value(), limit, "vocab entry '" + it.key() + "'"), it.key(), token_kind::normal, false);
  }
  for (const json& a : added) {
    const std::string content = string_of(member(a, "content", "added token"), "added token content");
    const int32_t id = checked_id(member(a, "id", "added token"), limit, "added token '" + content + "'");
    if (content.empty()) fail("added token " + std::to_string(id) + " is empty");
    place(id, content, optional_bool(a, "special", false) ? token_kind::control : token_kind::user_defined, true);
  }
  if (spec.pieces.empty()) fail("the vocabulary is empty");

  const json& merges = member(model, "merges", "model");
  if (!merges.is_array()) fail("model.merges is not an array");
  spec.merges.reserve(merges.size());
  for (size_t r = 0; r < merges.size(); ++r) {
    const json& m = merges[r];
    if (m.is_string()) {  // "left right", exactly one space
      const std::string s = m.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        fail("merge " + std::to_string(r) + " '" + s + "' is not two tokens separated by one space");
      }
      spec.merges.emplace_back(s.substr(0, sp), s.substr(sp + 1));
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      spec.merges.emplace_back(m[0].get<std::string>(), m[1].get<std::string>());
    } else {
      fail("merge " + std::to_string(r) + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
  }
}

// BOS from a TemplateProcessing post-processor whose single-sequence template starts with a
// special token (Llama 3), possibly inside a Sequence.
void parse_post_processor(const json& pp, tokenizer_spec& spec, int depth) {
  if (pp.is_null() || depth > 8) return;
  const std::string type = string_of(member(pp, "type", "post_processor"), "post_processor.type");
  if (type == "Sequence" && pp.contains("processors") && pp.at("processors").is_array()) {
    for (const json& p : pp.at("processors")) parse_post_processor(p, spec, depth + 1);
  } else if (type == "TemplateProcessing") {
    const json& single = member(pp, "single", "TemplateProcessing");
    if (!single.is_array() || single.empty() || !single[0].is_object() || !single[0].contains("SpecialToken")) return;
    const std::string name = string_of(member(single[0].at("SpecialToken"), "id", "SpecialToken"), "SpecialToken.id");
    for (size_t i = 0; i < spec.pieces.size(); ++i) {
      if (spec.pieces[i] == name) {
        spec.bos_id = int32_t(i);
        spec.add_bos = true;
        return;
      }
    }
    fail("post_processor adds '" + name + "', which is not a token");
  } else if (type != "ByteLevel") {
    fail("post_processor type '" + type + "' is not supported");
  }
}

json parse_json(std::string_view text, const char* what) {
  json j = json::parse(text.begin(), text.end(), nullptr, false);
  if (j.is_discarded()) throw format_error(std::string(what) + ": not valid JSON");
  return j;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw format_error("tokenizer: cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

tokenizer tokenizer::from_hf_json(std::string_view tokenizer_json, std::string_view config_json) {
  tokenizer_spec spec;
  try {
    const json root = parse_json(tokenizer_json, "tokenizer.json");
    if (!root.is_object()) fail("not a JSON object");
    parse_model(root, spec);
    if (root.contains("normalizer") && !root.at("normalizer").is_null()) {
      const json& norm = root.at("normalizer");
      if (!norm.is_object() || norm.value("type", "") != "NFC") fail("only a null or NFC normalizer is supported");
    }
    std::vector<pre_tokenizer_step> steps;
    if (root.contains("pre_tokenizer")) parse_pre_tokenizer(root.at("pre_tokenizer"), steps, 0);
    spec.pre = pre_tokenizer(std::move(steps));
    const json& dec = root.contains("decoder") ? root.at("decoder") : json();
    if (!dec.is_object() || dec.value("type", "") != "ByteLevel") fail("only the ByteLevel decoder is supported");
    if (root.contains("post_processor")) parse_post_processor(root.at("post_processor"), spec, 0);
    if (!config_json.empty()) apply_config(parse_json(config_json, "tokenizer_config.json"), spec);
  } catch (const json::exception& e) {  // type mismatches deep inside the document
    throw format_error(std::string("tokenizer.json: unexpected content: ") + e.what());
  }
  return from_spec(std::move(spec));
}

tokenizer tokenizer::from_hf_files(const std::string& tokenizer_json_path,
                                   const std::string& tokenizer_config_json_path) {
  const std::string tok = read_file(tokenizer_json_path);
  const std::string cfg = tokenizer_config_json_path.empty() ? std::string() : read_file(tokenizer_config_json_path);
  try {
    return from_hf_json(tok, cfg);
  } catch (const format_error& e) {
    throw format_error(std::string(e.what()) + " (" + tokenizer_json_path + ")");
  }
}

}  // namespace dspark

// Tiny random Llama-family models for the engine tests, written to disk as a Hugging Face
// folder (config.json + model.safetensors) or as a GGUF file, plus an independent reference
// forward pass in double precision.
//
// The reference shares no code with the engine: it reads the weights from this file's own
// float arrays (HF naming and row order), and computes attention, RoPE (HF "neox" pairing),
// norms and the MLP in plain loops. The GGUF writer permutes Q/K rows the way llama.cpp's
// converter does, so loading it exercises the interleaved-RoPE path.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include <nlohmann/json.hpp>

#include "models/formats/fp16.h"

namespace dspark::test {

struct tiny_spec {
  std::string arch = "LlamaForCausalLM";  // or Qwen2ForCausalLM, Qwen3ForCausalLM, Mistral...
  int64_t n_vocab = 64;
  int64_t n_embd = 32;
  int64_t n_layer = 2;
  int64_t n_head = 4;
  int64_t n_head_kv = 2;
  int64_t head_dim = 8;  // Qwen3 may differ from n_embd / n_head
  int64_t n_ff = 48;
  int64_t n_ctx = 128;
  double rope_theta = 10000.0;
  double rms_eps = 1e-5;
  bool tied = false;
  bool llama3_scaling = false;  // HF rope_scaling {rope_type: llama3}
  uint32_t seed = 1;
  bool qkv_bias() const { return arch == "Qwen2ForCausalLM"; }
  bool qk_norm() const { return arch == "Qwen3ForCausalLM"; }
};

struct tiny_tensor {
  std::vector<int64_t> shape;  // row-major, outermost first
  std::vector<float> data;
};

// HF tensor name -> values; random with a fixed seed, scaled so activations stay O(1).
using tiny_weights = std::map<std::string, tiny_tensor>;

inline tiny_weights make_tiny_weights(const tiny_spec& s) {
  std::mt19937 rng(s.seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  tiny_weights w;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float scale, float offset) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    tiny_tensor t{shape, std::vector<float>(static_cast<size_t>(n))};
    for (auto& v : t.data) v = offset + scale * normal(rng);
    w[name] = std::move(t);
  };
  const int64_t qd = s.n_head * s.head_dim, kvd = s.n_head_kv * s.head_dim;
  add("model.embed_tokens.weight", {s.n_vocab, s.n_embd}, 1.0f, 0.0f);
  for (int64_t l = 0; l < s.n_layer; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {s.n_embd}, 0.1f, 1.0f);
    add(p + "self_attn.q_proj.weight", {qd, s.n_embd}, 0.3f, 0.0f);
    add(p + "self_attn.k_proj.weight", {kvd, s.n_embd}, 0.3f, 0.0f);
    add(p + "self_attn.v_proj.weight", {kvd, s.n_embd}, 0.3f, 0.0f);
    add(p + "self_attn.o_proj.weight", {s.n_embd, qd}, 0.2f, 0.0f);
    if (s.qkv_bias()) {
      add(p + "self_attn.q_proj.bias", {qd}, 0.2f, 0.0f);
      add(p + "self_attn.k_proj.bias", {kvd}, 0.2f, 0.0f);
      add(p + "self_attn.v_proj.bias", {kvd}, 0.2f, 0.0f);
    }
    if (s.qk_norm()) {
      add(p + "self_attn.q_norm.weight", {s.head_dim}, 0.1f, 1.0f);
      add(p + "self_attn.k_norm.weight", {s.head_dim}, 0.1f, 1.0f);
    }
    add(p + "post_attention_layernorm.weight", {s.n_embd}, 0.1f, 1.0f);
    add(p + "mlp.gate_proj.weight", {s.n_ff, s.n_embd}, 0.3f, 0.0f);
    add(p + "mlp.up_proj.weight", {s.n_ff, s.n_embd}, 0.3f, 0.0f);
    add(p + "mlp.down_proj.weight", {s.n_embd, s.n_ff}, 0.2f, 0.0f);
  }
  add("model.norm.weight", {s.n_embd}, 0.1f, 1.0f);
  if (!s.tied) add("lm_head.weight", {s.n_vocab, s.n_embd}, 0.3f, 0.0f);
  return w;
}

inline nlohmann::json tiny_hf_config(const tiny_spec& s, const std::string& torch_dtype) {
  nlohmann::json c = {
      {"architectures", {s.arch}},
      {"vocab_size", s.n_vocab},
      {"hidden_size", s.n_embd},
      {"num_hidden_layers", s.n_layer},
      {"num_attention_heads", s.n_head},
      {"num_key_value_heads", s.n_head_kv},
      {"head_dim", s.head_dim},
      {"intermediate_size", s.n_ff},
      {"max_position_embeddings", s.n_ctx},
      {"rope_theta", s.rope_theta},
      {"rms_norm_eps", s.rms_eps},
      {"tie_word_embeddings", s.tied},
      {"bos_token_id", 1},
      {"eos_token_id", 2},
      {"torch_dtype", torch_dtype},
  };
  if (s.llama3_scaling)
    c["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 16}};
  return c;
}

// Writes `w` as one safetensors file, every tensor in `dtype` ("F32", "F16" or "BF16").
inline void write_safetensors(const std::string& path, const tiny_weights& w,
                              const std::string& dtype = "F32") {
  const size_t elem = dtype == "F32" ? 4 : 2;
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const auto& [name, t] : w) {
    const size_t begin = data.size();
    for (float v : t.data) {
      if (dtype == "F32") {
        data.append(reinterpret_cast<const char*>(&v), 4);
      } else {
        const uint16_t h = dtype == "F16" ? fp32_to_fp16(v) : fp32_to_bf16(v);
        data.append(reinterpret_cast<const char*>(&h), 2);
      }
    }
    header[name] = {{"dtype", dtype}, {"shape", t.shape}, {"data_offsets", {begin, begin + t.data.size() * elem}}};
  }
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');
  const uint64_t n = h.size();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(&n), 8);
  out.write(h.data(), static_cast<std::streamsize>(h.size()));
  out.write(data.data(), static_cast<std::streamsize>(data.size()));
}

// A fresh HF folder holding config.json and model.safetensors for `s`.
inline std::string write_tiny_hf(const std::string& dir, const tiny_spec& s, const tiny_weights& w,
                                 const std::string& dtype = "F32") {
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  const std::string torch_dtype = dtype == "F32" ? "float32" : dtype == "F16" ? "float16" : "bfloat16";
  std::ofstream(dir + "/config.json") << tiny_hf_config(s, torch_dtype).dump(2);
  write_safetensors(dir + "/model.safetensors", w, dtype);
  return dir;
}

// The tiny models' 64-token character vocabulary: <unk> <s> </s> (control), "Ġ" (space), a-z,
// A-Z, 0-7, in id order.
inline std::vector<std::string> tiny_vocab() {
  std::vector<std::string> v = {"<unk>", "<s>", "</s>", "\xC4\xA0"};
  for (char c = 'a'; c <= 'z'; ++c) v.emplace_back(1, c);
  for (char c = 'A'; c <= 'Z'; ++c) v.emplace_back(1, c);
  for (char c = '0'; c <= '7'; ++c) v.emplace_back(1, c);
  return v;
}

// Adds tokenizer.json (byte-level BPE, no merges) and tokenizer_config.json (ChatML template,
// EOS </s>) for tiny_vocab() to an HF folder.
inline void write_tiny_tokenizer(const std::string& dir) {
  const auto vocab = tiny_vocab();
  nlohmann::json v = nlohmann::json::object();
  for (size_t i = 0; i < vocab.size(); ++i) v[vocab[i]] = i;
  nlohmann::json added = nlohmann::json::array();
  for (int i = 0; i < 3; ++i)
    added.push_back({{"id", i}, {"content", vocab[i]}, {"special", true}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false}});
  const nlohmann::json tok = {{"version", "1.0"},
                              {"added_tokens", added},
                              {"normalizer", nullptr},
                              {"pre_tokenizer", nullptr},
                              {"post_processor", nullptr},
                              {"decoder", {{"type", "ByteLevel"}}},
                              {"model", {{"type", "BPE"}, {"vocab", v}, {"merges", nlohmann::json::array()}}}};
  std::ofstream(dir + "/tokenizer.json") << tok.dump();
  const std::string chatml =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
      "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
      "{% endif %}";
  const nlohmann::json cfg = {{"bos_token", "<s>"}, {"eos_token", "</s>"}, {"add_bos_token", false},
                              {"chat_template", chatml}};
  std::ofstream(dir + "/tokenizer_config.json") << cfg.dump();
}

// Removes the scratch directories of this process when it exits.
struct scratch_cleanup {
  std::vector<std::filesystem::path> dirs;
  ~scratch_cleanup() {
    std::error_code ec;
    for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
  }
};
inline scratch_cleanup g_scratch_cleanup;

// A scratch directory unique to the running process and `name`, removed at exit.
inline std::string scratch_dir(const std::string& name) {
  const auto p = std::filesystem::temp_directory_path() /
                 ("dspark_engine_test_" + std::to_string(::getpid()) + "_" + name);
  std::filesystem::create_directories(p);
  g_scratch_cleanup.dirs.push_back(p);
  return p.string();
}

}  // namespace dspark::test

// Writes a tiny test model (test_model_tiny.h) as a GGUF v3 file the way llama.cpp's converter
// would: llama-arch Q/K rows permuted for interleaved RoPE, llama3 scaling baked into a
// rope_freqs.weight tensor of per-dimension divisors, all tensors F32.
#pragma once

#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "tests/engine/test_model_tiny.h"

namespace dspark::test {

namespace gguf_detail {

struct writer {
  std::string buf;
  void u32(uint32_t v) { buf.append(reinterpret_cast<const char*>(&v), 4); }
  void u64(uint64_t v) { buf.append(reinterpret_cast<const char*>(&v), 8); }
  void f32(float v) { buf.append(reinterpret_cast<const char*>(&v), 4); }
  void str(const std::string& s) {
    u64(s.size());
    buf += s;
  }
  void kv_u32(const std::string& k, uint32_t v) { str(k); u32(4); u32(v); }
  void kv_f32(const std::string& k, float v) { str(k); u32(6); f32(v); }
  void kv_str(const std::string& k, const std::string& v) { str(k); u32(8); str(v); }
};

// llama.cpp's permute(): per head, rows [2][d/2] -> [d/2][2], so HF's (i, i + d/2) pairs
// become adjacent rows (2i, 2i + 1).
inline tiny_tensor permute_rows(const tiny_tensor& t, int64_t n_heads) {
  tiny_tensor out = t;
  const int64_t n_in = t.shape[1], d = t.shape[0] / n_heads, half = d / 2;
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j)
        for (int64_t c = 0; c < n_in; ++c)
          out.data[(h * d + 2 * i + j) * n_in + c] = t.data[(h * d + j * half + i) * n_in + c];
  return out;
}

inline std::string gguf_name(const std::string& hf) {
  static const std::pair<const char*, const char*> k_map[] = {
      {"input_layernorm.weight", "attn_norm.weight"}, {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},   {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.o_proj.weight", "attn_output.weight"}, {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},       {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.q_norm.weight", "attn_q_norm.weight"}, {"self_attn.k_norm.weight", "attn_k_norm.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"}, {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},         {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  const std::string prefix = "model.layers.";
  const size_t dot = hf.find('.', prefix.size());
  const std::string layer = hf.substr(prefix.size(), dot - prefix.size());
  const std::string role = hf.substr(dot + 1);
  for (const auto& [h, g] : k_map)
    if (role == h) return "blk." + layer + "." + g;
  return hf;
}

// llama.cpp's baked llama3 factors: divisor of each base frequency (factor 8, low 1, high 4,
// original context 16, as in tiny_hf_config).
inline std::vector<float> llama3_factors(const tiny_spec& s) {
  std::vector<float> out;
  const double factor = 8, low = 1, high = 4, old_ctx = 16, pi = 3.14159265358979323846;
  for (int64_t i = 0; i < s.head_dim / 2; ++i) {
    const double f = 1.0 / std::pow(s.rope_theta, 2.0 * i / s.head_dim);
    const double wavelen = 2 * pi / f;
    double div = 1;
    if (wavelen > old_ctx / low) {
      div = factor;
    } else if (wavelen >= old_ctx / high) {
      const double smooth = (old_ctx / wavelen - low) / (high - low);
      div = 1.0 / ((1 - smooth) / factor + smooth);
    }
    out.push_back(static_cast<float>(div));
  }
  return out;
}

}  // namespace gguf_detail

// Writes `w` for spec `s` to `path` as GGUF. arch is "llama", "qwen2" or "qwen3" (the latter
// two keep HF row order, as their converters do).
inline void write_tiny_gguf(const std::string& path, const tiny_spec& s, const tiny_weights& w,
                            const std::string& arch) {
  using namespace gguf_detail;
  std::vector<std::pair<std::string, tiny_tensor>> tensors;
  for (const auto& [name, t] : w) {
    tiny_tensor u = t;
    if (arch == "llama" && name.find("q_proj.weight") != std::string::npos) u = permute_rows(t, s.n_head);
    if (arch == "llama" && name.find("k_proj.weight") != std::string::npos) u = permute_rows(t, s.n_head_kv);
    tensors.emplace_back(gguf_name(name), std::move(u));
  }
  if (s.llama3_scaling) {
    const auto f = llama3_factors(s);
    tensors.emplace_back("rope_freqs.weight", tiny_tensor{{static_cast<int64_t>(f.size())}, f});
  }

  writer h;
  h.buf = "GGUF";
  h.u32(3);
  h.u64(tensors.size());
  h.u64(15);  // metadata entries below
  const std::string p = arch + ".";
  h.kv_str("general.architecture", arch);
  h.kv_str("general.name", "tiny-test");
  h.kv_u32(p + "context_length", static_cast<uint32_t>(s.n_ctx));
  h.kv_u32(p + "embedding_length", static_cast<uint32_t>(s.n_embd));
  h.kv_u32(p + "block_count", static_cast<uint32_t>(s.n_layer));
  h.kv_u32(p + "feed_forward_length", static_cast<uint32_t>(s.n_ff));
  h.kv_u32(p + "attention.head_count", static_cast<uint32_t>(s.n_head));
  h.kv_u32(p + "attention.head_count_kv", static_cast<uint32_t>(s.n_head_kv));
  h.kv_u32(p + "attention.key_length", static_cast<uint32_t>(s.head_dim));
  h.kv_u32(p + "rope.dimension_count", static_cast<uint32_t>(s.head_dim));
  h.kv_f32(p + "rope.freq_base", static_cast<float>(s.rope_theta));
  h.kv_f32(p + "attention.layer_norm_rms_epsilon", static_cast<float>(s.rms_eps));
  h.kv_u32(p + "vocab_size", static_cast<uint32_t>(s.n_vocab));
  h.kv_u32("tokenizer.ggml.bos_token_id", 1);
  h.kv_u32("tokenizer.ggml.eos_token_id", 2);

  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    h.str(name);
    h.u32(static_cast<uint32_t>(t.shape.size()));
    for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) h.u64(static_cast<uint64_t>(*it));
    h.u32(0);  // F32
    h.u64(offset);
    offset += (t.data.size() * 4 + 31) / 32 * 32;
  }
  while (h.buf.size() % 32 != 0) h.buf.push_back('\0');
  for (const auto& [name, t] : tensors) {
    h.buf.append(reinterpret_cast<const char*>(t.data.data()), t.data.size() * 4);
    while (h.buf.size() % 32 != 0) h.buf.push_back('\0');
  }
  std::ofstream(path, std::ios::binary).write(h.buf.data(), static_cast<std::streamsize>(h.buf.size()));
}

}  // namespace dspark::test

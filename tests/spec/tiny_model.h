// A tiny random Llama-family model held in memory (f32 weights), for end-to-end tests of the
// speculative loop that need many thousands of generations: vocabulary 6, 2 layers, width 16.
// Its distributions are far from uniform (weights scaled up), so sampling tests have power.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/spec/counter_rng.h"
#include "models/arch/llama_weights.h"
#include "models/arch/model_config.h"

namespace dspark::test {

struct tiny_model {
  model_config cfg;
  llama_weights w;
  std::vector<std::unique_ptr<std::vector<float>>> storage;  // backing f32 buffers

  tiny_model(int64_t n_vocab = 6, int64_t n_layer = 2, uint64_t seed = 1) {
    cfg.arch = model_arch::llama;
    cfg.name = "tiny";
    cfg.n_vocab = n_vocab;
    cfg.n_embd = 16;
    cfg.n_layer = n_layer;
    cfg.n_head = 2;
    cfg.n_head_kv = 1;
    cfg.head_dim = 8;
    cfg.n_ff = 32;
    cfg.n_ctx_train = 256;
    cfg.n_rot = 8;
    cfg.rope = rope_style::neox;
    cfg.rms_eps = 1e-5;
    uint64_t state = seed;
    auto mat = [&](const std::string& name, int64_t rows, int64_t cols, float scale) {
      auto buf = std::make_unique<std::vector<float>>(static_cast<size_t>(rows * cols));
      for (float& x : *buf) {
        state = splitmix64_mix(state);
        x = scale * (static_cast<float>(static_cast<double>(state >> 11) * 0x1.0p-53) * 2.0f - 1.0f);
      }
      tensor_view v;
      v.name = name;
      v.type = dtype::f32;
      v.shape = {rows, cols};
      v.data = reinterpret_cast<const uint8_t*>(buf->data());
      v.n_bytes = buf->size() * sizeof(float);
      storage.push_back(std::move(buf));
      return v;
    };
    const int64_t d = cfg.n_embd;
    w.token_embd = mat("token_embd", n_vocab, d, 1.0f);
    w.output = mat("output", n_vocab, d, 1.5f);
    w.output_norm.assign(static_cast<size_t>(d), 1.0f);
    for (int64_t l = 0; l < n_layer; ++l) {
      layer_weights lw;
      lw.attn_norm.assign(static_cast<size_t>(d), 1.0f);
      lw.ffn_norm.assign(static_cast<size_t>(d), 1.0f);
      lw.wq = mat("wq", cfg.q_dim(), d, 0.5f);
      lw.wk = mat("wk", cfg.kv_dim(), d, 0.5f);
      lw.wv = mat("wv", cfg.kv_dim(), d, 0.5f);
      lw.wo = mat("wo", d, cfg.q_dim(), 0.5f);
      lw.w_gate = mat("w_gate", cfg.n_ff, d, 0.5f);
      lw.w_up = mat("w_up", cfg.n_ff, d, 0.5f);
      lw.w_down = mat("w_down", d, cfg.n_ff, 0.5f);
      w.layers.push_back(std::move(lw));
    }
  }

  static cpu_backend_options options(int32_t n_seq) {
    cpu_backend_options o;
    o.n_threads = 1;
    o.n_seq_max = n_seq;
    o.n_ctx = 64;
    o.max_tokens_per_step = 32;
    o.precision = matmul_precision::f32_activations;
    return o;
  }
};

}  // namespace dspark::test

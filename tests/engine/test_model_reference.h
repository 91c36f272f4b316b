// An independent reference forward pass for the tiny test models (test_model_tiny.h), written
// plainly in double precision from the Hugging Face definitions of Llama / Qwen2 / Qwen3:
// no KV cache, no batching, every position recomputed from scratch, RoPE with HF's pairing
// (i, i + head_dim/2). Shares nothing with the engine.
#pragma once

#include <cmath>
#include <string>
#include <vector>

#include "tests/engine/test_model_tiny.h"

namespace dspark::test {

struct reference_output {
  std::vector<std::vector<double>> logits;               // [n_tokens][n_vocab]
  std::vector<std::vector<std::vector<double>>> hidden;  // [n_layer][n_tokens][n_embd] after layer
};

namespace ref_detail {

using vec = std::vector<double>;

inline const tiny_tensor& get(const tiny_weights& w, const std::string& name) { return w.at(name); }

// y = W x for W [n_out, n_in] row-major.
inline vec linear(const tiny_tensor& W, const vec& x) {
  const int64_t n_out = W.shape[0], n_in = W.shape[1];
  vec y(static_cast<size_t>(n_out), 0.0);
  for (int64_t o = 0; o < n_out; ++o)
    for (int64_t i = 0; i < n_in; ++i) y[o] += static_cast<double>(W.data[o * n_in + i]) * x[i];
  return y;
}

inline vec rms_norm(const vec& x, const tiny_tensor& g, double eps, size_t off = 0, size_t n = 0) {
  if (n == 0) n = x.size();
  double ss = 0;
  for (size_t i = 0; i < n; ++i) ss += x[off + i] * x[off + i];
  const double r = 1.0 / std::sqrt(ss / static_cast<double>(n) + eps);
  vec y(n);
  for (size_t i = 0; i < n; ++i) y[i] = x[off + i] * r * g.data[i];
  return y;
}

inline vec inv_freqs(const tiny_spec& s) {
  const int64_t half = s.head_dim / 2;
  vec f(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    f[i] = 1.0 / std::pow(s.rope_theta, static_cast<double>(2 * i) / static_cast<double>(s.head_dim));
  if (s.llama3_scaling) {  // factor 8, low 1, high 4, original context 16 (tiny_hf_config)
    const double factor = 8, low = 1, high = 4, old_ctx = 16, pi = 3.14159265358979323846;
    for (double& v : f) {
      const double wavelen = 2 * pi / v;
      if (wavelen < old_ctx / high) continue;
      if (wavelen > old_ctx / low) {
        v /= factor;
      } else {
        const double smooth = (old_ctx / wavelen - low) / (high - low);
        v = (1 - smooth) * v / factor + smooth * v;
      }
    }
  }
  return f;
}

// Rotates each head of x ([n_heads * head_dim]) for position pos, HF pairing.
inline void rope(vec& x, int64_t n_heads, const tiny_spec& s, int64_t pos) {
  const vec f = inv_freqs(s);
  const int64_t d = s.head_dim, half = d / 2;
  for (int64_t h = 0; h < n_heads; ++h) {
    for (int64_t i = 0; i < half; ++i) {
      const double a = static_cast<double>(pos) * f[i];
      const double x0 = x[h * d + i], x1 = x[h * d + i + half];
      x[h * d + i] = x0 * std::cos(a) - x1 * std::sin(a);
      x[h * d + i + half] = x1 * std::cos(a) + x0 * std::sin(a);
    }
  }
}

}  // namespace ref_detail

inline reference_output reference_forward(const tiny_spec& s, const tiny_weights& w,
                                          const std::vector<int32_t>& tokens) {
  using namespace ref_detail;
  const size_t n = tokens.size();
  const int64_t E = s.n_embd, d = s.head_dim, group = s.n_head / s.n_head_kv;
  std::vector<vec> x(n);
  const tiny_tensor& emb = get(w, "model.embed_tokens.weight");
  for (size_t t = 0; t < n; ++t) x[t] = vec(emb.data.begin() + tokens[t] * E, emb.data.begin() + (tokens[t] + 1) * E);

  reference_output out;
  for (int64_t l = 0; l < s.n_layer; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<vec> q(n), k(n), v(n);
    for (size_t t = 0; t < n; ++t) {
      const vec xn = rms_norm(x[t], get(w, p + "input_layernorm.weight"), s.rms_eps);
      q[t] = linear(get(w, p + "self_attn.q_proj.weight"), xn);
      k[t] = linear(get(w, p + "self_attn.k_proj.weight"), xn);
      v[t] = linear(get(w, p + "self_attn.v_proj.weight"), xn);
      if (s.qkv_bias()) {
        for (size_t i = 0; i < q[t].size(); ++i) q[t][i] += get(w, p + "self_attn.q_proj.bias").data[i];
        for (size_t i = 0; i < k[t].size(); ++i) k[t][i] += get(w, p + "self_attn.k_proj.bias").data[i];
        for (size_t i = 0; i < v[t].size(); ++i) v[t][i] += get(w, p + "self_attn.v_proj.bias").data[i];
      }
      if (s.qk_norm()) {
        for (int64_t h = 0; h < s.n_head; ++h) {
          const vec r = rms_norm(q[t], get(w, p + "self_attn.q_norm.weight"), s.rms_eps, h * d, d);
          std::copy(r.begin(), r.end(), q[t].begin() + h * d);
        }
        for (int64_t h = 0; h < s.n_head_kv; ++h) {
          const vec r = rms_norm(k[t], get(w, p + "self_attn.k_norm.weight"), s.rms_eps, h * d, d);
          std::copy(r.begin(), r.end(), k[t].begin() + h * d);
        }
      }
      rope(q[t], s.n_head, s, static_cast<int64_t>(t));
      rope(k[t], s.n_head_kv, s, static_cast<int64_t>(t));
    }
    for (size_t t = 0; t < n; ++t) {
      vec attn(static_cast<size_t>(s.n_head * d), 0.0);
      for (int64_t h = 0; h < s.n_head; ++h) {
        const int64_t g = h / group;
        vec score(t + 1);
        double mx = -1e300;
        for (size_t j = 0; j <= t; ++j) {
          double dot = 0;
          for (int64_t i = 0; i < d; ++i) dot += q[t][h * d + i] * k[j][g * d + i];
          score[j] = dot / std::sqrt(static_cast<double>(d));
          mx = std::max(mx, score[j]);
        }
        double sum = 0;
        for (auto& sc : score) sum += (sc = std::exp(sc - mx));
        for (size_t j = 0; j <= t; ++j)
          for (int64_t i = 0; i < d; ++i) attn[h * d + i] += score[j] / sum * v[j][g * d + i];
      }
      const vec o = linear(get(w, p + "self_attn.o_proj.weight"), attn);
      for (int64_t i = 0; i < E; ++i) x[t][i] += o[i];
      const vec xn = rms_norm(x[t], get(w, p + "post_attention_layernorm.weight"), s.rms_eps);
      vec gate = linear(get(w, p + "mlp.gate_proj.weight"), xn);
      const vec up = linear(get(w, p + "mlp.up_proj.weight"), xn);
      for (size_t i = 0; i < gate.size(); ++i) gate[i] = gate[i] / (1.0 + std::exp(-gate[i])) * up[i];
      const vec down = linear(get(w, p + "mlp.down_proj.weight"), gate);
      for (int64_t i = 0; i < E; ++i) x[t][i] += down[i];
    }
    out.hidden.push_back(x);
  }
  const tiny_tensor& head = get(w, s.tied ? "model.embed_tokens.weight" : "lm_head.weight");
  for (size_t t = 0; t < n; ++t) out.logits.push_back(linear(head, rms_norm(x[t], get(w, "model.norm.weight"), s.rms_eps)));
  return out;
}

}  // namespace dspark::test

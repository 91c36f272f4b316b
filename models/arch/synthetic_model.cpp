// synthetic_model: real architecture shapes with random bf16 weights (see synthetic_model.h).
#include "models/arch/synthetic_model.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "common/error.h"
#include "engine/spec/counter_rng.h"
#include "models/formats/fp16.h"

namespace dspark {

namespace {

// One row per shape; an alias (llama3.1-8b) repeats its row under the second name.
struct shape_row {
  const char* name;
  model_arch arch;
  int64_t n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
  double rope_theta, rms_eps;
  bool qk_norm, llama3_scaling;
};

// smollm2-135m keeps an untied head: the real model ties it, and a step reads the same bytes.
constexpr shape_row k_shapes[] = {
    {"qwen3-8b", model_arch::qwen3, 151936, 4096, 36, 32, 8, 128, 12288, 1e6, 1e-6, true, false},
    {"llama3-8b", model_arch::llama, 128256, 4096, 32, 32, 8, 128, 14336, 5e5, 1e-5, false, true},
    {"llama3.1-8b", model_arch::llama, 128256, 4096, 32, 32, 8, 128, 14336, 5e5, 1e-5, false, true},
    {"smollm2-135m", model_arch::llama, 49152, 576, 30, 9, 3, 64, 1536, 1e5, 1e-5, false, false},
    {"tiny", model_arch::llama, 512, 64, 2, 4, 2, 16, 128, 10000.0, 1e-5, false, false},
};

}  // namespace

model_config synthetic_shape_config(const std::string& shape, int64_t n_ctx_train) {
  for (const shape_row& r : k_shapes) {
    if (shape != r.name) continue;
    model_config c;
    c.n_ctx_train = n_ctx_train;
    c.rope = rope_style::neox;
    c.arch = r.arch;
    c.n_vocab = r.n_vocab;
    c.n_embd = r.n_embd;
    c.n_layer = r.n_layer;
    c.n_head = r.n_head;
    c.n_head_kv = r.n_head_kv;
    c.head_dim = r.head_dim;
    c.n_ff = r.n_ff;
    c.rope_theta = r.rope_theta;
    c.rms_eps = r.rms_eps;
    c.qk_norm = r.qk_norm;
    if (r.llama3_scaling) c.rope_scaling = rope_llama3_scaling{};
    c.name = "synthetic " + shape;
    c.n_rot = c.head_dim;
    return c;
  }
  throw invalid_argument_error("synthetic model: unknown shape '" + shape + "' (known: " + synthetic_shape_names() + ")");
}

namespace {

// Uniform [-scale, scale] bf16 values from a hash of (seed, tensor id, element), split over
// the cores: the result does not depend on the thread count.
std::vector<uint16_t> random_bf16(int64_t n, uint64_t seed, uint64_t tensor, float scale) {
  std::vector<uint16_t> v(static_cast<size_t>(n));
  const uint64_t key = splitmix64_mix(seed ^ splitmix64_mix(tensor + 1));
  const int64_t n_threads = std::max<int64_t>(1, std::min<int64_t>(std::thread::hardware_concurrency(), n / (1 << 20) + 1));
  auto fill = [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const uint64_t h = splitmix64_mix(key + static_cast<uint64_t>(i));
      const float u = static_cast<float>(static_cast<double>(h >> 11) * 0x1.0p-53) * 2.0f - 1.0f;
      v[static_cast<size_t>(i)] = fp32_to_bf16(scale * u);
    }
  };
  std::vector<std::thread> pool;
  const int64_t chunk = (n + n_threads - 1) / n_threads;
  for (int64_t t = 0; t < n_threads; ++t)
    pool.emplace_back(fill, std::min(n, t * chunk), std::min(n, (t + 1) * chunk));
  for (std::thread& t : pool) t.join();
  return v;
}

}  // namespace

std::string synthetic_shape_names() { return "qwen3-8b, llama3-8b (or llama3.1-8b), smollm2-135m, tiny"; }

std::unique_ptr<synthetic_model> make_synthetic_model(const std::string& shape, uint64_t seed, int64_t n_ctx_train,
                                                      synthetic_text text) {
  auto m = std::make_unique<synthetic_model>();
  m->config = synthetic_shape_config(shape, n_ctx_train);
  const model_config& c = m->config;
  uint64_t tensor = 0;
  auto matrix = [&](const char* name, int64_t rows, int64_t cols, float scale) {
    m->storage.push_back(random_bf16(rows * cols, seed, tensor++, scale));
    tensor_view v;
    v.name = name;
    v.type = dtype::bf16;
    v.shape = {rows, cols};
    v.data = reinterpret_cast<const uint8_t*>(m->storage.back().data());
    v.n_bytes = m->storage.back().size() * sizeof(uint16_t);
    return v;
  };
  m->storage.reserve(9);  // views point into the buffers: no reallocation of the outer vector
  const int64_t d = c.n_embd;
  auto scaled = [](int64_t n_in) { return 1.0f / std::sqrt(static_cast<float>(n_in)); };
  const bool echo = text == synthetic_text::echo;
  m->weights.token_embd = matrix("token_embd", c.n_vocab, d, echo ? 16.0f : 1.0f);
  if (echo) {  // the head reads the embedding's values (its own matrix on the device: untied)
    m->weights.output = m->weights.token_embd;
    m->weights.output.name = "output";
  } else {
    m->weights.output = matrix("output", c.n_vocab, d, scaled(d));
  }
  m->weights.output_norm.assign(static_cast<size_t>(d), 1.0f);
  layer_weights l;
  l.attn_norm.assign(static_cast<size_t>(d), 1.0f);
  l.ffn_norm.assign(static_cast<size_t>(d), 1.0f);
  l.wq = matrix("wq", c.q_dim(), d, scaled(d));
  l.wk = matrix("wk", c.kv_dim(), d, scaled(d));
  l.wv = matrix("wv", c.kv_dim(), d, scaled(d));
  l.wo = matrix("wo", d, c.q_dim(), scaled(c.q_dim()));
  l.w_gate = matrix("w_gate", c.n_ff, d, scaled(d));
  l.w_up = matrix("w_up", c.n_ff, d, scaled(d));
  l.w_down = matrix("w_down", d, c.n_ff, scaled(c.n_ff));
  if (c.qk_norm) {
    l.q_norm.assign(static_cast<size_t>(c.head_dim), 1.0f);
    l.k_norm.assign(static_cast<size_t>(c.head_dim), 1.0f);
  }
  m->weights.layers.assign(static_cast<size_t>(c.n_layer), l);
  return m;
}

}  // namespace dspark

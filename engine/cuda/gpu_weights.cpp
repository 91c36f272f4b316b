// GPU weights and KV pool (see gpu_weights.h).
#include "engine/cuda/gpu_weights.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/dequantize.h"
#include "kernels/cuda/random_fill.h"
#include "models/arch/llama_weights.h"
#include "models/arch/model_config.h"

namespace dspark::cuda {

namespace {

// Bump allocator over one device buffer: offsets aligned to 256 bytes.
struct layout {
  size_t size = 0;
  size_t take(size_t bytes) {
    const size_t off = size;
    size = (size + bytes + 255) / 256 * 256;
    return off;
  }
};

void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument("gpu model: " + msg);
}

void upload_floats(const std::vector<float>& v, size_t n, float* dst, const char* what, cudaStream_t stream) {
  require(v.size() == n, std::string(what) + " has " + std::to_string(v.size()) + " values, want " + std::to_string(n));
  DSPARK_CUDA_CHECK(cudaMemcpyAsync(dst, v.data(), n * sizeof(float), cudaMemcpyHostToDevice, stream));
}

}  // namespace

void upload_matrix_bf16(const tensor_view& t, int64_t rows, int64_t cols, bf16_t* dst, device_buffer& staging,
                        cudaStream_t stream) {
  require(t.shape.size() == 2 && t.shape[0] == rows && t.shape[1] == cols,
          "tensor " + t.name + " has an unexpected shape (want [" + std::to_string(rows) + ", " +
              std::to_string(cols) + "])");
  const size_t bytes = bytes_for(t.type, rows * cols);
  require(t.n_bytes >= bytes && t.data != nullptr, "tensor " + t.name + " holds fewer bytes than its shape needs");
  if (staging.bytes() < bytes) {
    DSPARK_CUDA_CHECK(cudaStreamSynchronize(stream));  // the old staging may still be read
    staging = device_buffer(bytes);
  }
  // Pageable source: the copy is stream-ordered after the previous decode that read staging.
  DSPARK_CUDA_CHECK(cudaMemcpyAsync(staging.data(), t.data, bytes, cudaMemcpyHostToDevice, stream));
  dequantize_to_bf16(t.type, staging.data(), dst, rows * cols, stream);
}

size_t gpu_model_config::matrix_bytes_per_step() const {
  const size_t per_layer = static_cast<size_t>(qkv_dim()) * n_embd + static_cast<size_t>(n_embd) * q_dim() +
                           3ull * n_ff * n_embd;
  return 2 * (per_layer * n_layer + static_cast<size_t>(n_vocab) * n_embd);
}

void validate_gpu_config(const gpu_model_config& c) {
  require(c.n_vocab > 0 && c.n_embd > 0 && c.n_layer > 0 && c.n_head > 0 && c.n_kv_head > 0 && c.n_ff > 0,
          "sizes must be positive");
  require(c.head_dim == 64 || c.head_dim == 128, "head_dim " + std::to_string(c.head_dim) + " (supported: 64, 128)");
  require(c.n_head % c.n_kv_head == 0, "n_head must be a multiple of n_kv_head");
  require(c.n_head / c.n_kv_head <= 32, "GQA group larger than 32");
  require(c.n_embd % 8 == 0 && c.n_ff % 8 == 0, "n_embd and n_ff must be multiples of 8");
  require(c.n_rot % 2 == 0 && c.n_rot <= c.head_dim, "n_rot must be even and <= head_dim");
  require(c.inv_freq.size() == static_cast<size_t>(c.n_rot / 2), "inv_freq must have n_rot/2 entries");
}

gpu_model_config gpu_config_from(const model_config& m) {
  gpu_model_config c;
  c.n_vocab = static_cast<int32_t>(m.n_vocab);
  c.n_embd = static_cast<int32_t>(m.n_embd);
  c.n_layer = static_cast<int32_t>(m.n_layer);
  c.n_head = static_cast<int32_t>(m.n_head);
  c.n_kv_head = static_cast<int32_t>(m.n_head_kv);
  c.head_dim = static_cast<int32_t>(m.head_dim);
  c.n_ff = static_cast<int32_t>(m.n_ff);
  c.n_rot = static_cast<int32_t>(m.n_rot);
  c.pairing = m.rope == rope_style::neox ? rope_pairing::neox : rope_pairing::interleaved;
  c.rms_eps = static_cast<float>(m.rms_eps);
  c.qk_norm = m.qk_norm;
  c.qkv_bias = m.qkv_bias;
  c.tied_embeddings = m.tied_embeddings;
  c.inv_freq = rope_inv_freqs(m.n_rot, static_cast<float>(m.rope_theta), m.rope_scaling);
  for (size_t i = 0; i < m.rope_freq_factors.size() && i < c.inv_freq.size(); ++i) c.inv_freq[i] /= m.rope_freq_factors[i];
  validate_gpu_config(c);
  return c;
}

void gpu_weights::allocate(const gpu_model_config& c) {
  validate_gpu_config(c);
  const size_t d = c.n_embd, bf = sizeof(bf16_t), f = sizeof(float);
  layout L;
  const size_t o_embd = L.take(static_cast<size_t>(c.n_vocab) * d * bf);
  const size_t o_out = c.tied_embeddings ? o_embd : L.take(static_cast<size_t>(c.n_vocab) * d * bf);
  const size_t o_onorm = L.take(d * f);
  const size_t o_freq = L.take(c.inv_freq.size() * f + f);
  struct offs { size_t qkv, o, gu, down, an, fn, qn, kn, bias; };
  std::vector<offs> lo(c.n_layer);
  for (auto& x : lo) {
    x.qkv = L.take(static_cast<size_t>(c.qkv_dim()) * d * bf);
    x.o = L.take(d * c.q_dim() * bf);
    x.gu = L.take(2ull * c.n_ff * d * bf);
    x.down = L.take(d * c.n_ff * bf);
    x.an = L.take(d * f);
    x.fn = L.take(d * f);
    x.qn = c.qk_norm ? L.take(c.head_dim * f) : SIZE_MAX;
    x.kn = c.qk_norm ? L.take(c.head_dim * f) : SIZE_MAX;
    x.bias = c.qkv_bias ? L.take(c.qkv_dim() * f) : SIZE_MAX;
  }
  storage_ = device_buffer(L.size);
  auto* base = static_cast<unsigned char*>(storage_.data());
  auto at_bf = [&](size_t o) { return reinterpret_cast<bf16_t*>(base + o); };
  auto at_f = [&](size_t o) { return o == SIZE_MAX ? nullptr : reinterpret_cast<float*>(base + o); };
  tok_embd = at_bf(o_embd);
  output = at_bf(o_out);
  output_norm = at_f(o_onorm);
  inv_freq = at_f(o_freq);
  layers.resize(c.n_layer);
  for (int32_t l = 0; l < c.n_layer; ++l) {
    layers[l] = {at_bf(lo[l].qkv), at_bf(lo[l].o), at_bf(lo[l].gu), at_bf(lo[l].down), at_f(lo[l].an),
                 at_f(lo[l].fn), at_f(lo[l].qn), at_f(lo[l].kn), at_f(lo[l].bias)};
  }
}

gpu_weights gpu_weights::upload(const gpu_model_config& c, const llama_weights& w, cudaStream_t stream) {
  gpu_weights g;
  g.allocate(c);
  require(static_cast<int32_t>(w.layers.size()) == c.n_layer, "layer count mismatch");
  const int64_t d = c.n_embd;
  device_buffer staging;
  upload_matrix_bf16(w.token_embd, c.n_vocab, d, g.tok_embd, staging, stream);
  if (!c.tied_embeddings) upload_matrix_bf16(w.output, c.n_vocab, d, g.output, staging, stream);
  upload_floats(w.output_norm, d, g.output_norm, "output_norm", stream);
  DSPARK_CUDA_CHECK(cudaMemcpyAsync(g.inv_freq, c.inv_freq.data(), c.inv_freq.size() * sizeof(float),
                                    cudaMemcpyHostToDevice, stream));
  for (int32_t l = 0; l < c.n_layer; ++l) {
    const layer_weights& s = w.layers[l];
    const gpu_layer& t = g.layers[l];
    upload_matrix_bf16(s.wq, c.q_dim(), d, t.wqkv, staging, stream);
    upload_matrix_bf16(s.wk, c.kv_dim(), d, t.wqkv + static_cast<size_t>(c.q_dim()) * d, staging, stream);
    upload_matrix_bf16(s.wv, c.kv_dim(), d, t.wqkv + static_cast<size_t>(c.q_dim() + c.kv_dim()) * d, staging, stream);
    upload_matrix_bf16(s.wo, d, c.q_dim(), t.wo, staging, stream);
    upload_matrix_bf16(s.w_gate, c.n_ff, d, t.w_gate_up, staging, stream);
    upload_matrix_bf16(s.w_up, c.n_ff, d, t.w_gate_up + static_cast<size_t>(c.n_ff) * d, staging, stream);
    upload_matrix_bf16(s.w_down, d, c.n_ff, t.w_down, staging, stream);
    upload_floats(s.attn_norm, d, t.attn_norm, "attn_norm", stream);
    upload_floats(s.ffn_norm, d, t.ffn_norm, "ffn_norm", stream);
    if (c.qk_norm) {
      upload_floats(s.q_norm, c.head_dim, t.q_norm, "q_norm", stream);
      upload_floats(s.k_norm, c.head_dim, t.k_norm, "k_norm", stream);
    }
    if (c.qkv_bias) {
      upload_floats(s.bq, c.q_dim(), t.qkv_bias, "bq", stream);
      upload_floats(s.bk, c.kv_dim(), t.qkv_bias + c.q_dim(), "bk", stream);
      upload_floats(s.bv, c.kv_dim(), t.qkv_bias + c.q_dim() + c.kv_dim(), "bv", stream);
    }
  }
  DSPARK_CUDA_CHECK(cudaStreamSynchronize(stream));
  return g;
}

gpu_weights gpu_weights::random(const gpu_model_config& c, uint64_t seed, cudaStream_t stream) {
  gpu_weights g;
  g.allocate(c);
  const int64_t d = c.n_embd;
  uint64_t s = seed;
  auto mat = [&](bf16_t* p, int64_t rows, int64_t cols) {
    const float a = 1.f / std::sqrt(static_cast<float>(cols));
    fill_uniform(p, rows * cols, ++s, -a, a, stream);
  };
  auto gains = [&](float* p, int64_t n) {
    if (p != nullptr) fill_uniform(p, n, ++s, 0.8f, 1.2f, stream);
  };
  fill_uniform(g.tok_embd, static_cast<int64_t>(c.n_vocab) * d, ++s, -1.f, 1.f, stream);
  if (!c.tied_embeddings) mat(g.output, c.n_vocab, d);
  gains(g.output_norm, d);
  DSPARK_CUDA_CHECK(cudaMemcpyAsync(g.inv_freq, c.inv_freq.data(), c.inv_freq.size() * sizeof(float),
                                    cudaMemcpyHostToDevice, stream));
  for (const gpu_layer& t : g.layers) {
    mat(t.wqkv, c.qkv_dim(), d);
    mat(t.wo, d, c.q_dim());
    mat(t.w_gate_up, 2 * static_cast<int64_t>(c.n_ff), d);
    mat(t.w_down, d, c.n_ff);
    gains(t.attn_norm, d);
    gains(t.ffn_norm, d);
    gains(t.q_norm, c.head_dim);
    gains(t.k_norm, c.head_dim);
    if (t.qkv_bias != nullptr) fill_uniform(t.qkv_bias, c.qkv_dim(), ++s, -0.1f, 0.1f, stream);
  }
  DSPARK_CUDA_CHECK(cudaStreamSynchronize(stream));
  return g;
}

size_t gpu_kv_pool::bytes_per_block(const gpu_model_config& c, int32_t block_size) {
  return 2ull * c.n_layer * c.n_kv_head * block_size * c.head_dim * sizeof(bf16_t);
}

gpu_kv_pool::gpu_kv_pool(const gpu_model_config& c, int32_t block_size, int32_t n_blocks)
    : block_size_(block_size), n_blocks_(n_blocks) {
  require(block_size > 0 && n_blocks > 0, "KV pool needs positive block_size and n_blocks");
  layer_elems_ = static_cast<size_t>(n_blocks) * c.n_kv_head * block_size * c.head_dim;
  storage_ = device_buffer(2 * layer_elems_ * c.n_layer * sizeof(bf16_t));
  base_ = storage_.as<bf16_t>();
  // Zero once: padded rows of a captured batch read block 0, and zeros keep them finite. Waited
  // for here: the forward writes K/V on a non-blocking stream, which would not wait for a plain
  // cudaMemset, and a late memset would wipe the first steps' K/V (device_buffer.h).
  memset_and_wait(storage_.data(), 0, storage_.bytes());
}

}  // namespace dspark::cuda

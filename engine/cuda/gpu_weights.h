// A Llama-family model's weights resident on the GPU in bf16, and the paged bf16 KV pool.
//
// Weights are decoded once at load (kernels/cuda/dequantize) from whatever the file stores.
// Per layer, Q/K/V are stored as one fused [q_dim + 2 kv_dim, n_embd] matrix and gate/up as one
// [2 n_ff, n_embd] matrix, so each is one GEMM per step. Everything lives in a single device
// allocation. Norm gains and biases stay float32 (they are tiny and read as f32 by the kernels).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/rope.h"

namespace dspark {
struct model_config;
struct llama_weights;
struct tensor_view;
}  // namespace dspark

namespace dspark::cuda {

using bf16_t = __nv_bfloat16;

// The shape of the model as the GPU forward needs it (no tokenizer or file details).
struct gpu_model_config {
  int32_t n_vocab = 0;
  int32_t n_embd = 0;
  int32_t n_layer = 0;
  int32_t n_head = 0;
  int32_t n_kv_head = 0;
  int32_t head_dim = 0;
  int32_t n_ff = 0;
  int32_t n_rot = 0;
  rope_pairing pairing = rope_pairing::neox;
  float rms_eps = 1e-5f;
  bool qk_norm = false;
  bool qkv_bias = false;
  bool tied_embeddings = false;
  std::vector<float> inv_freq;  // [n_rot / 2] RoPE inverse frequencies (scaling applied)

  int32_t q_dim() const { return n_head * head_dim; }
  int32_t kv_dim() const { return n_kv_head * head_dim; }
  int32_t qkv_dim() const { return q_dim() + 2 * kv_dim(); }
  // Bytes of bf16 matrices one decode step streams: every layer matrix plus the LM head (the
  // embedding table is only gathered from, a few rows per step).
  size_t matrix_bytes_per_step() const;
};

// From the engine's config; RoPE frequencies computed as the CPU backend does (rope_inv_freqs,
// then GGUF rope_freq_factors divisors). Throws std::invalid_argument for shapes the kernels
// do not support (head_dim not 64/128, dims not multiples of 8).
gpu_model_config gpu_config_from(const model_config& c);

// Checks the kernels' shape requirements; throws std::invalid_argument naming the field.
void validate_gpu_config(const gpu_model_config& c);

struct gpu_layer {
  bf16_t* wqkv = nullptr;       // [qkv_dim, n_embd]
  bf16_t* wo = nullptr;         // [n_embd, q_dim]
  bf16_t* w_gate_up = nullptr;  // [2 n_ff, n_embd]: gate rows then up rows
  bf16_t* w_down = nullptr;     // [n_embd, n_ff]
  float* attn_norm = nullptr;   // [n_embd]
  float* ffn_norm = nullptr;    // [n_embd]
  float* q_norm = nullptr;      // [head_dim] or null
  float* k_norm = nullptr;      // [head_dim] or null
  float* qkv_bias = nullptr;    // [qkv_dim] or null
};

// Copies a host tensor of shape [rows, cols] (any dtype dequantize_to_bf16 reads: f32, bf16,
// f16, the GGUF quants) to dst as bf16 through `staging` (grown, after a sync, when too small).
// Throws std::invalid_argument naming the tensor on a shape or size mismatch. Asynchronous on
// `stream` except for that growth; keep the host tensor alive until the stream is synchronised.
void upload_matrix_bf16(const tensor_view& t, int64_t rows, int64_t cols, bf16_t* dst, device_buffer& staging,
                        cudaStream_t stream);

class gpu_weights {
 public:
  // Uploads a bound model (any supported dtype) and decodes it to bf16. Synchronises `stream`
  // before returning. Throws std::invalid_argument when the tensors' shapes disagree with `c`.
  static gpu_weights upload(const gpu_model_config& c, const llama_weights& w, cudaStream_t stream);
  // Random weights (uniform, scaled 1/sqrt(n_in) so activations stay O(1)) for benchmarks.
  static gpu_weights random(const gpu_model_config& c, uint64_t seed, cudaStream_t stream);

  bf16_t* tok_embd = nullptr;     // [n_vocab, n_embd]
  bf16_t* output = nullptr;       // [n_vocab, n_embd]; == tok_embd when tied
  float* output_norm = nullptr;   // [n_embd]
  float* inv_freq = nullptr;      // [n_rot / 2]
  std::vector<gpu_layer> layers;  // [n_layer]
  size_t bytes() const { return storage_.bytes(); }

 private:
  void allocate(const gpu_model_config& c);
  device_buffer storage_;
};

// Paged KV cache on the GPU: per layer K and V pools of [n_blocks, n_kv_head, block_size,
// head_dim] bf16 (the layout of kernels/cuda/rope.h and paged_attention.h). Block ids are
// handed out by the owner (the backend or the bench); this holds the memory only.
class gpu_kv_pool {
 public:
  gpu_kv_pool() = default;
  gpu_kv_pool(const gpu_model_config& c, int32_t block_size, int32_t n_blocks);

  // Bytes one block takes over all layers, K and V.
  static size_t bytes_per_block(const gpu_model_config& c, int32_t block_size);

  bf16_t* k(int32_t layer) const { return base_ + (2 * static_cast<size_t>(layer)) * layer_elems_; }
  bf16_t* v(int32_t layer) const { return base_ + (2 * static_cast<size_t>(layer) + 1) * layer_elems_; }
  int32_t block_size() const { return block_size_; }
  int32_t n_blocks() const { return n_blocks_; }
  size_t bytes() const { return storage_.bytes(); }

 private:
  device_buffer storage_;
  bf16_t* base_ = nullptr;
  size_t layer_elems_ = 0;  // elements of one layer's K (or V) pool
  int32_t block_size_ = 0;
  int32_t n_blocks_ = 0;
};

}  // namespace dspark::cuda

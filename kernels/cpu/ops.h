// Small per-token ops of the transformer forward pass, float32, single-threaded (each is
// O(n) on a row of a few thousand elements; the caller parallelises across tokens if needed).
//
// Shapes are given per call; "row" means n contiguous floats.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

namespace dspark {

// out[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i], i < n. out may equal x.
void rms_norm(const float* x, const float* weight, float eps, int64_t n, float* out);
// x[i] = x[i] / sqrt(mean(x^2) + eps) * weight[i], in place.
void rms_norm_inplace(float* x, const float* weight, float eps, int64_t n);

// dst[i] += src[i], i < n (the residual connection).
void add_inplace(float* dst, const float* src, int64_t n);

// out[i] = silu(gate[i]) * up[i] with silu(g) = g / (1 + exp(-g)). out may equal gate or up.
void silu_mul(const float* gate, const float* up, float* out, int64_t n);

// How the rotary dimensions of a head are paired.
enum class rope_style : int {
  // Pairs (2i, 2i + 1): GGUF "llama" files, whose Q/K rows the converter permuted.
  normal = 0,
  // Pairs (i, i + head_dim / 2): Hugging Face Llama/Qwen layout, GGUF qwen2/qwen3 ("neox").
  neox = 1,
};

// Llama 3.x frequency rescaling (HF rope_type "llama3").
struct rope_llama3_scaling {
  float factor = 8.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int64_t original_max_positions = 8192;
};

// Inverse frequencies of the head_dim / 2 rotary pairs: theta^(-2i / head_dim), computed in
// float32 like Hugging Face, then rescaled per llama3 when `scaling` is given. head_dim even.
std::vector<float> rope_inv_freqs(int64_t head_dim, float theta,
                                  const std::optional<rope_llama3_scaling>& scaling = std::nullopt);

// Rotates x: [n_heads][head_dim] (row stride head_dim) in place for position `pos`: pair i
// turns by angle pos * inv_freqs[i] (rounded to float32 as Hugging Face does, then cos/sin
// taken exactly). inv_freqs has head_dim / 2 entries.
void rope_apply(float* x, int64_t n_heads, int64_t head_dim, int64_t pos, const float* inv_freqs,
                rope_style style);

// x[i] = exp(x[i] - max) / sum_j exp(x[j] - max), in place, i < n (n >= 1).
void softmax_inplace(float* x, int64_t n);

// Index of the largest element (the first one on ties; NaNs are never chosen unless all are
// NaN, then 0). n >= 1.
int64_t argmax(const float* x, int64_t n);

}  // namespace dspark

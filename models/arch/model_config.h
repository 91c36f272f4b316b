// The hyper-parameters of a decoder-only transformer (Llama, Mistral, Qwen2, Qwen3), read from
// GGUF metadata or from a Hugging Face config.json.
//
// One struct serves every supported architecture; the differences that matter to the forward
// pass are flags (qkv_bias, qk_norm), the RoPE pairing and the RoPE frequency scaling:
//   - GGUF "llama" files store Q/K rows permuted by the converter, so RoPE pairs (2i, 2i+1)
//     (rope_style::normal); HF checkpoints and GGUF qwen2/qwen3 pair (i, i + head_dim/2)
//     (rope_style::neox).
//   - Llama 3.1 scales the RoPE frequencies ("llama3"); HF gives the parameters, GGUF bakes
//     them into a rope_freqs.weight tensor of per-dimension divisors (rope_freq_factors).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "kernels/cpu/ops.h"  // rope_style, rope_llama3_scaling: shared with the kernels

namespace dspark {

class gguf_file;

// Values only ever appended.
enum class model_arch : uint32_t { llama = 0, mistral = 1, qwen2 = 2, qwen3 = 3 };

struct model_config {
  model_arch arch = model_arch::llama;
  std::string name;  // general.name or the HF architecture; informational

  int64_t n_vocab = 0;
  int64_t n_embd = 0;     // residual stream width
  int64_t n_layer = 0;
  int64_t n_head = 0;     // query heads
  int64_t n_head_kv = 0;  // key/value heads (GQA when < n_head)
  int64_t head_dim = 0;   // may differ from n_embd / n_head (Qwen3)
  int64_t n_ff = 0;       // MLP hidden width
  int64_t n_ctx_train = 0;

  int64_t n_rot = 0;  // dimensions of each head that RoPE rotates; == head_dim (validated)
  double rope_theta = 10000.0;
  rope_style rope = rope_style::neox;
  std::optional<rope_llama3_scaling> rope_scaling;  // HF rope_scaling {rope_type: llama3}
  // [n_rot / 2] f32 divisors of the base frequencies (GGUF rope_freqs.weight); empty if none.
  std::vector<float> rope_freq_factors;

  double rms_eps = 1e-5;
  bool tied_embeddings = false;  // LM head reuses the token embedding table
  bool qkv_bias = false;         // Qwen2: q/k/v projections have biases
  bool qk_norm = false;          // Qwen3: per-head RMSNorm of q and k before RoPE

  int32_t bos_id = -1;               // -1 when the model has none
  std::vector<int32_t> eos_ids;      // every id that ends generation (EOS, end of turn)

  int64_t q_dim() const { return n_head * head_dim; }
  int64_t kv_dim() const { return n_head_kv * head_dim; }
};

std::string_view arch_name(model_arch a);

// Reads the config from GGUF metadata (keys prefixed by general.architecture). Throws
// format_error for an unsupported architecture (naming it and the supported ones), a missing
// required key, or inconsistent sizes.
model_config config_from_gguf(const gguf_file& f);

// Reads the config from a Hugging Face config.json object. Throws format_error as above.
model_config config_from_hf(const nlohmann::json& config);

// Checks the sizes are positive and consistent (n_head % n_head_kv == 0, n_rot == head_dim and
// even, ...); throws format_error naming the field. Called by both readers.
void validate_config(const model_config& c);

}  // namespace dspark

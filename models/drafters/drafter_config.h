// drafter.json of a trained drafter folder (docs/drafter-format.md): parsed, every field
// checked, and matched against the target model it will run with.
//
// Kinds: dspark (parallel block + sequential Markov/RNN head + confidence head), dflash (the
// same block without the sequential head), eagle3 (one autoregressive layer over fused target
// features, a chain of block_size drafts), mtp1 (eagle3 over the last layer's output, chain 1).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "kernels/cpu/ops.h"  // rope_llama3_scaling

namespace dspark {

struct model_config;

enum class drafter_kind : int { dspark = 0, dflash = 1, eagle3 = 2, mtp1 = 3 };
enum class markov_kind : int { none = 0, vanilla = 1, rnn = 2 };

// "dspark", "dflash", "eagle3", "mtp1".
const char* drafter_kind_name(drafter_kind k);
// Parses a kind name; nullopt for anything else.
std::optional<drafter_kind> parse_drafter_kind(const std::string& name);

struct drafter_config {
  drafter_kind kind = drafter_kind::dspark;
  // The target the drafter was trained for.
  int64_t target_n_vocab = 0;
  int64_t target_n_embd = 0;
  int64_t target_n_layer = 0;
  std::string target_name;
  std::vector<int32_t> target_layers;  // feature layers, in feature order
  int32_t block_size = 0;              // gamma (dspark/dflash), chain length (eagle3), 1 (mtp1)
  int32_t mask_token_id = -1;          // dspark/dflash only; -1 otherwise
  int64_t n_layer = 0, n_embd = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0;
  double rms_eps = 1e-5;
  double rope_theta = 10000.0;
  std::optional<rope_llama3_scaling> rope_scaling;
  bool qk_norm = false;
  markov_kind markov = markov_kind::none;
  int64_t markov_rank = 0;             // r; 0 when markov is none
  bool confidence = false;
  std::vector<float> confidence_temperatures;  // [block_size] when confidence

  bool block_drafter() const { return kind == drafter_kind::dspark || kind == drafter_kind::dflash; }
  int64_t feature_width() const { return static_cast<int64_t>(target_layers.size()) * target_n_embd; }
  int64_t q_dim() const { return n_head * head_dim; }
  int64_t kv_dim() const { return n_head_kv * head_dim; }
  // Input width of the attention projections: d (dspark/dflash) or 2d (eagle3/mtp1).
  int64_t attn_in() const { return block_drafter() ? n_embd : 2 * n_embd; }
};

// Parses and validates drafter.json's content. Throws format_error naming the field (a JSON
// path like "markov.rank") and what was expected, for an unknown format/version/kind, a
// missing or mistyped field, or inconsistent sizes.
drafter_config parse_drafter_config(const nlohmann::json& j);
// Reads <dir>/drafter.json; format_error when it is missing or not JSON.
drafter_config load_drafter_config(const std::string& dir);

// Throws invalid_argument_error when the drafter was trained for a different target (vocab,
// width or depth differ from `target`), naming both values.
void check_drafter_target(const drafter_config& d, const model_config& target);

}  // namespace dspark

// The weights of a trained drafter folder (docs/drafter-format.md, "Tensors"), converted to
// f32 host arrays. model.safetensors, or shards listed by model.safetensors.index.json.
//
// Every tensor the config calls for must be present with its exact shape, and nothing else:
// a missing, extra, misshapen or non-F32/BF16 tensor is a format_error naming it. The target's
// embedding and LM head are not part of the folder (drafter_target_head.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/drafters/drafter_config.h"
#include "models/formats/tensor_view.h"

namespace dspark {

// A row-major f32 tensor owned by the drafter; view() exposes it to the CPU kernels.
struct host_tensor {
  std::vector<int64_t> shape;
  std::vector<float> data;

  bool empty() const { return data.empty(); }
  const float* ptr() const { return data.data(); }
  // A tensor_view over data (type f32), for matmul(); valid while this tensor lives unmoved.
  tensor_view view() const;
};

struct drafter_layer_weights {
  host_tensor attn_norm;               // [d] dspark/dflash only
  host_tensor wq, wk, wv, wo;          // [n_head*hd, d_in], [n_head_kv*hd, d_in] x2, [d, n_head*hd]
  host_tensor q_norm, k_norm;          // [hd] when qk_norm
  host_tensor ffn_norm;                // [d]
  host_tensor w_gate, w_up, w_down;    // [n_ff, d] x2, [d, n_ff]
};

struct drafter_weights {
  host_tensor fc;            // [d, m*d]
  host_tensor hidden_norm;   // [d]
  host_tensor input_norm;    // [d] eagle3/mtp1
  std::vector<drafter_layer_weights> layers;
  host_tensor norm;          // [d]
  host_tensor markov_w1;     // [V, r] markov vanilla or rnn
  host_tensor markov_w2;     // [V, r]
  host_tensor rnn_w;         // [3r, 2r + d] markov rnn
  host_tensor rnn_b;         // [3r]
  host_tensor conf_w;        // [1, d + r] (d when markov none), confidence enabled
  host_tensor conf_b;        // [1]
};

// Name -> shape of every tensor the config calls for, in the doc's table order.
std::vector<std::pair<std::string, std::vector<int64_t>>> expected_drafter_tensors(const drafter_config& c);

// Binds the tensors of `dir` (format_error as above, or when no weight file exists).
drafter_weights load_drafter_weights(const std::string& dir, const drafter_config& c);

}  // namespace dspark

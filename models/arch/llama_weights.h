// The weights of a Llama-family model (Llama, Mistral, Qwen2, Qwen3) bound by name from a
// GGUF file or a Hugging Face safetensors folder, every shape checked against the config.
//
// Matrices stay in the file mapping in their stored dtype (tensor_view); the small vectors
// (norm gains, biases) are converted to float32 copies so the kernels read one type. The
// views are valid while the file object they came from lives (engine/model.h owns both).
//
// Name mapping (N = layer):
//   GGUF                          HF safetensors
//   token_embd.weight             model.embed_tokens.weight
//   output_norm.weight            model.norm.weight
//   output.weight (or tied)       lm_head.weight (or tied)
//   blk.N.attn_norm.weight        model.layers.N.input_layernorm.weight
//   blk.N.attn_{q,k,v}.weight     model.layers.N.self_attn.{q,k,v}_proj.weight  (+ .bias)
//   blk.N.attn_{q,k}_norm.weight  model.layers.N.self_attn.{q,k}_norm.weight
//   blk.N.attn_output.weight      model.layers.N.self_attn.o_proj.weight
//   blk.N.ffn_norm.weight         model.layers.N.post_attention_layernorm.weight
//   blk.N.ffn_{gate,up,down}      model.layers.N.mlp.{gate,up,down}_proj.weight
#pragma once

#include <vector>

#include "models/arch/model_config.h"
#include "models/formats/tensor_view.h"

namespace dspark {

class gguf_file;
class safetensors_folder;

struct layer_weights {
  std::vector<float> attn_norm;  // [n_embd] f32
  tensor_view wq;                // [n_head * head_dim, n_embd]
  tensor_view wk;                // [n_head_kv * head_dim, n_embd]
  tensor_view wv;                // [n_head_kv * head_dim, n_embd]
  tensor_view wo;                // [n_embd, n_head * head_dim]
  std::vector<float> bq;         // [n_head * head_dim] f32; empty unless config.qkv_bias
  std::vector<float> bk;         // [n_head_kv * head_dim] f32; empty unless config.qkv_bias
  std::vector<float> bv;         // [n_head_kv * head_dim] f32; empty unless config.qkv_bias
  std::vector<float> q_norm;     // [head_dim] f32; empty unless config.qk_norm
  std::vector<float> k_norm;     // [head_dim] f32; empty unless config.qk_norm
  std::vector<float> ffn_norm;   // [n_embd] f32
  tensor_view w_gate;            // [n_ff, n_embd]
  tensor_view w_up;              // [n_ff, n_embd]
  tensor_view w_down;            // [n_embd, n_ff]
};

struct llama_weights {
  tensor_view token_embd;          // [n_vocab, n_embd]
  std::vector<float> output_norm;  // [n_embd] f32
  tensor_view output;              // [n_vocab, n_embd]; a copy of token_embd when tied
  std::vector<layer_weights> layers;  // [n_layer]
};

// Binds every tensor the config calls for. Throws format_error naming the tensor when one is
// missing, has the wrong shape (expected and actual shape in the message) or an unsupported
// dtype.
llama_weights bind_weights(const model_config& c, const gguf_file& f);
llama_weights bind_weights(const model_config& c, const safetensors_folder& f);

}  // namespace dspark

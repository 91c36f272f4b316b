// The CUDA backend: engine/backend.h on an NVIDIA GPU.
//
// Weights are decoded to bf16 on the device at construction (engine/cuda/gpu_weights.h); the
// KV cache is a paged bf16 pool sized from the free device memory (a configurable fraction of
// what is left after weights and step buffers); forward() runs the ragged batch through
// engine/cuda/gpu_runner.h with one host->device plan copy, one host sync and the logits
// copied back. Plain decoding steps (every sequence adds one token and wants its logits) are
// padded to a batch-size bucket (1, 2, 4, 8, ...) and replayed from a CUDA graph per bucket.
//
// KV bookkeeping lives on the host: each sequence holds a list of block ids and a logical
// length; truncate() only lowers the length (O(1)); blocks return to the pool on free. A batch
// that needs more blocks than are free returns forward_status::out_of_kv and changes nothing.
//
// Token rows are bit-identical whatever batch they are in as long as a step has at most
// gemv_max_tokens tokens (the hand GEMV path; attention is batch-invariant always): with the
// default 8, verifying up to 7 drafts of one sequence reproduces one-by-one decoding exactly.
// Larger steps go through cuBLASLt and agree to bf16 rounding only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "engine/backend.h"

namespace dspark {
struct model_config;
struct llama_weights;
}  // namespace dspark

namespace dspark::cuda {

struct cuda_backend_options {
  int device = 0;                    // CUDA device ordinal
  int32_t n_seq_max = 16;            // sequences open at once
  int32_t n_ctx = 0;                 // longest sequence; 0 = min(n_ctx_train, 8192)
  int32_t max_tokens_per_step = 512;
  int32_t max_logit_rows = 0;        // 0 = max_tokens_per_step
  int32_t max_capture_layers = 8;
  int32_t kv_block_size = 16;        // positions per KV block
  int32_t kv_blocks = 0;             // 0 = sized from free memory by kv_memory_fraction
  double kv_memory_fraction = 0.9;   // of the device memory free after weights and buffers
  int32_t attention_split_len = 128; // keys per attention split (fixed: batch invariance); 512 left
                                     // a 16-tile serial chain per block (H100: 94 vs 27 us/layer)
  int32_t gemv_max_tokens = 8;       // steps of <= this many tokens use the hand GEMV
  bool use_graphs = true;            // CUDA graphs for decode and small (<= 128-token) verify steps
};

class cuda_backend final : public backend {
 public:
  // `c` and `w` are only read during construction (weights are copied to the device). Throws
  // invalid_argument_error for bad options or unsupported shapes, cuda::cuda_error when the
  // device or memory is missing.
  cuda_backend(const model_config& c, const llama_weights& w, const cuda_backend_options& opt = {});
  ~cuda_backend() override;

  const backend_limits& limits() const override { return limits_; }
  std::optional<int32_t> open_sequence() override;
  void free_sequence(int32_t seq) override;
  int32_t sequence_length(int32_t seq) const override;
  void truncate(int32_t seq, int32_t new_len) override;
  forward_output forward(const forward_batch& batch) override;
  bool supports_forward_prefix() const override { return true; }
  forward_output forward_prefix(const forward_batch& batch, int32_t n_layers) override;

  int32_t kv_blocks_total() const;
  int32_t kv_blocks_free() const;
  int32_t kv_block_size() const;

 private:
  struct state;
  void check_seq(int32_t seq, const char* what) const;
  forward_output run_layers(const forward_batch& b, int32_t n_layers);
  std::unique_ptr<state> st_;
  backend_limits limits_;
};

}  // namespace dspark::cuda

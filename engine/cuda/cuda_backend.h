// The CUDA backend: engine/backend.h on an NVIDIA GPU.
//
// Weights are decoded to bf16 on the device at construction (engine/cuda/gpu_weights.h); the
// KV cache is a paged bf16 pool sized from the free device memory (a configurable fraction of
// what is left after weights and step buffers); forward() runs the ragged batch through
// engine/cuda/gpu_runner.h with one host->device plan copy, one host sync and the logits
// copied back (only each row's argmax id, computed on the device, when the batch asks for
// row_outputs::argmax: 4 bytes per row instead of 4 * n_vocab). Plain decoding steps (every
// sequence adds one token and wants its logits) run from a CUDA graph per batch-size bucket:
// every count up to gemv_max_tokens, then 16, 32, 64, ... (padding rows fill a bucket).
//
// KV bookkeeping lives on the host (engine/kv_block_pool.h, shared with the CPU cache): each
// sequence holds a block table and a logical length; truncate() only lowers the length (O(1));
// blocks return to the pool on free. A batch that needs more blocks than are free returns
// forward_status::out_of_kv and changes nothing. Prefix caching is the pool's too
// (attach_prefix / cache_prefix, backend.h): attached sequences read the shared blocks through
// their block tables; the one device-side step is the copy on write of a shared block a
// truncated sequence would write into (one cudaMemcpyAsync per layer for K and V, on the step's
// stream before the forward). Cached-prefix logits equal a cold prefill's bit for bit when
// every step that wrote the rows stayed within gemv_max_tokens (see below), else to bf16
// rounding.
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
  // Keys per attention split, fixed for the backend's life (batch invariance). 0 = chosen from
  // n_seq_max (attention_split_len_for): short splits cut the serial tile chain of a batch-1
  // step, long ones keep the block and combine count down for large batches.
  int32_t attention_split_len = 0;
  int32_t gemv_max_tokens = 8;       // steps of <= this many tokens use the hand GEMV
  bool use_graphs = true;            // CUDA graphs for decode and small verify steps
  // Steps of up to this many new tokens run from graphs (gpu_runner_options::graph_max_tokens);
  // 0 = DSPARK_GRAPH_MAX_TOKENS when set (1..65536, else invalid_argument_error), else 128.
  int32_t graph_max_tokens = 0;
};

// opt.graph_max_tokens, or DSPARK_GRAPH_MAX_TOKENS, or 128 (see cuda_backend_options).
int32_t resolve_graph_max_tokens(const cuda_backend_options& opt);

// The split length for a backend that runs at most n_seq_max sequences per step. H100,
// Qwen3-8B shape, context 1024 (docs/benchmarks.md, 2026-12-06 sweep): batch 1 is fastest at
// 32 keys (5.89 ms vs 6.26 at 128), batch 8 at 64 (8.88 vs 8.99), batch 32 and 128 at 128
// (9.54 / 19.5 ms vs 11.4 / 26.2 at 32).
int32_t attention_split_len_for(int32_t n_seq_max);

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
  int32_t attach_prefix(int32_t seq, std::span<const int32_t> tokens) override;
  void cache_prefix(int32_t seq, std::span<const int32_t> tokens) override;
  prefix_cache_stats prefix_stats() const override;
  graph_launch_stats graph_stats() const override;
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
  void copy_block(const kv_block_copy& c);
  std::unique_ptr<state> st_;
  backend_limits limits_;
};

// What a step-time profile measured on this process's CUDA backend depends on beyond the model:
// the GPU (its name), the kernel choices that change step times (the GEMV implementation,
// DSPARK_GEMV, and for mma its prefetch depth, DSPARK_MMA_PREFETCH) and the decode bucket rule.
// Part of the profile cache key, so a profile never prices another GPU's or another kernel's
// steps. Throws cuda_error when `device` does not exist.
std::string profile_tag(int device = 0);

}  // namespace dspark::cuda

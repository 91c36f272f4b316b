// The CPU backend: the Llama-family forward pass over a ragged batch (engine/backend.h) on a
// thread pool, with a block-paged KV cache (engine/kv_cache.h).
//
// Per step: token embedding; per layer RMSNorm -> Q/K/V (+bias) -> (q/k RMSNorm) -> RoPE ->
// K/V append -> causal GQA attention over the cached prefix -> output projection -> residual,
// RMSNorm -> gate/up -> SiLU(gate)*up -> down -> residual; final RMSNorm and the LM head on
// the logit rows only, and each row's argmax when the batch asks for it.
//
// Every activation buffer is allocated at construction for max_tokens_per_step (logits for
// max_logit_rows), so forward() allocates nothing.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "engine/backend.h"
#include "engine/kv_cache.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"
#include "models/arch/llama_weights.h"
#include "models/arch/model_config.h"

namespace dspark {

struct cpu_backend_options {
  int n_threads = 0;                 // 0 = hardware cores
  int32_t n_seq_max = 1;             // sequences open at once
  int32_t n_ctx = 0;                 // longest sequence; 0 = min(n_ctx_train, 4096)
  int32_t max_tokens_per_step = 256;
  int32_t max_logit_rows = 0;        // 0 = max_tokens_per_step
  int32_t max_capture_layers = 8;
  int32_t kv_block_size = 256;      // positions per KV block
  int32_t kv_blocks = 0;             // 0 = enough for n_seq_max sequences of n_ctx
  // q8_activations is fast; f32_activations matches float references tightly (golden tests).
  matmul_precision precision = matmul_precision::q8_activations;
};

// CPUs available to this process (its affinity mask; at least 1).
int default_thread_count();

class cpu_backend final : public backend {
 public:
  // `c` and `w` must outlive the backend. Throws invalid_argument_error for bad options.
  cpu_backend(const model_config& c, const llama_weights& w, const cpu_backend_options& opt = {});
  ~cpu_backend() override;

  const backend_limits& limits() const override { return limits_; }
  std::optional<int32_t> open_sequence() override;
  void free_sequence(int32_t seq) override;
  int32_t sequence_length(int32_t seq) const override;
  void truncate(int32_t seq, int32_t new_len) override;
  int32_t attach_prefix(int32_t seq, std::span<const int32_t> tokens) override;
  void cache_prefix(int32_t seq, std::span<const int32_t> tokens) override;
  prefix_cache_stats prefix_stats() const override { return kv_.prefix_stats(); }
  forward_output forward(const forward_batch& batch) override;
  bool supports_forward_prefix() const override { return true; }
  forward_output forward_prefix(const forward_batch& batch, int32_t n_layers) override;

  int n_threads() const { return pool_.n_threads(); }
  const kv_cache& kv() const { return kv_; }

 private:
  struct buffers;
  void validate(const forward_batch& b);
  forward_status reserve_kv(const forward_batch& b);
  void plan_rows(const forward_batch& b);
  void embed(const forward_batch& b);
  void attention_block(int il, int64_t n_tok, int64_t n_seqs);
  void mlp_block(int il, int64_t n_tok);
  void attend(int il, int64_t batch_index);
  void capture(int slot, int64_t n_rows);
  forward_output run_layers(const forward_batch& b, int32_t n_layers);
  void lm_head(int64_t n_rows);
  void argmax_rows(int64_t n_rows);

  const model_config& c_;
  const llama_weights& w_;
  cpu_backend_options opt_;
  backend_limits limits_;
  thread_pool pool_;
  kv_cache kv_;
  std::unique_ptr<buffers> buf_;
};

}  // namespace dspark

// The block drafters (dspark with the vanilla Markov head or none, and dflash) on the GPU: the
// same forward as models/drafters/dspark_drafter.h, in bf16 with f32 accumulation, on the
// drafter's own CUDA stream, batched over the requests of a propose() call.
//
// Layout on the device:
//   - weights: per layer the fused [wq|wk|wv] and [gate|up] matrices like the target's runner,
//     fc, the Markov w1/w2, and a private bf16 copy of the target's embedding and LM head (the
//     drafter does not depend on where the target runs);
//   - context K/V: one cache "block" per slot of cap = max_ctx + gamma rows (rounded up to 32)
//     in the paged layout of kernels/cuda/rope.h, so the target's RoPE/KV-write and paged
//     attention kernels serve the drafter unchanged. A block query of request r is its own
//     one-token pseudo-sequence with kv_len = s + gamma (s = x0's position): the causal kernel
//     then lets it see every context row and every block row, which is the block's "no mask".
//
// Per round (one propose() over R requests, in groups of at most group_size):
//   1. pending context rows (target features queued by on_commit, any requests) -> fc ->
//      RMSNorm -> per layer K/V written at their positions (one batched pass);
//   2. rows k-major (row k*R + r): x0 or mask -> layers -> final norm -> logits [gamma*R, V];
//   3. for k = 0..g-1: logits_k += w2 . w1[prev_k] (one GEMM over the group), confidence
//      logits, argmax -> prev_{k+1}, all on the device; one host sync at the end reads tokens
//      and confidences. Requests sampling at temperature > 0 make the group copy each logits_k
//      to the host instead and draw there (push_draft), so p_d is exactly the distribution of
//      the logits the token was drawn from.
// Buffers are allocated at construction; propose() and on_commit() allocate nothing (but one
// sampler per request on its first sampled round).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <vector>

#include "models/drafters/cuda/gpu_drafter_context.h"
#include "models/drafters/drafter.h"
#include "models/drafters/drafter_compute.h"
#include "models/drafters/drafter_config.h"
#include "models/drafters/drafter_weights.h"

namespace dspark {

// Whether the GPU block drafter runs this config (dspark/dflash, Markov none or vanilla,
// head_dim 64 or 128); `why` gets the reason when not.
bool cuda_block_drafter_supports(const drafter_config& c, std::string* why = nullptr);

class cuda_block_drafter final : public drafter {
 public:
  // Throws invalid_argument_error for a config it does not run (see above) or a target head of
  // the wrong shape, cuda_error when the device lacks memory.
  cuda_block_drafter(drafter_config c, drafter_weights w, const drafter_target_head& target,
                     const drafter_runtime_params& p);
  ~cuda_block_drafter() override;

  const drafter_caps& caps() const override { return caps_; }
  void begin(int32_t slot, std::span<const int32_t> prompt) override;
  void propose(std::span<const propose_request> batch, draft_batch& out) override;
  void on_commit(int32_t slot, const commit_info& c) override;
  void rollback(int32_t slot, int32_t n_context) override;
  void end(int32_t slot) override;
  void before_target_forward() override;

  const drafter_config& config() const { return c_; }
  int32_t context_rows(int32_t slot) const;
  size_t device_bytes() const;

  // Test view of the last propose(): the draft logits L_k (after the Markov bias) and the
  // confidence logits z_k of the last group's request i, k < gamma. Only when set_record(true).
  void set_record(bool on) { record_ = on; }
  std::vector<float> recorded_logits(int32_t i) const;
  std::vector<float> recorded_conf(int32_t i) const;

 private:
  struct device_state;
  struct device_layer;
  struct slot_info {
    bool open = false;
    int32_t n_rows = 0;  // context rows known (queued or written)
    draft_sampler_slot smp;
  };
  struct group_request {
    const propose_request* r;
    int32_t g;  // drafts to write
  };
  slot_info& open_slot(int32_t slot);
  void flush_context();
  void run_group(std::span<const group_request> grp, draft_batch& out);
  // The pieces of a round, enqueued on the drafter's stream (graph-capturable: no host sync).
  void enqueue_forward(int32_t R, int32_t g_max, int32_t n_splits);  // metadata upload .. base logits
  void enqueue_head_position(int32_t R, int32_t k);                 // Markov bias + confidence of k
  void enqueue_greedy_head(int32_t R, int32_t g_max);               // every k with argmax, download
  void record(int32_t R, int32_t g_max);
  slot_kv_cache kv_cache(const device_layer& L) const;


  drafter_config c_;
  drafter_runtime_params p_;
  drafter_caps caps_;
  int32_t group_size_ = 0;  // requests per block forward
  int32_t cap_ = 0;         // cache rows per slot
  int32_t pending_rows_ = 0;
  int32_t pending_max_ = 0;
  std::vector<slot_info> slots_;
  std::unique_ptr<device_state> d_;
  bool record_ = false;
  int32_t rec_r_ = 0;
};

}  // namespace dspark

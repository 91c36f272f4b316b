// EAGLE-3 and MTP-1 on the GPU: the forward of models/drafters/eagle3_drafter.h in bf16 with
// f32 accumulation and an f32 residual, on the drafter's own stream, batched over the requests
// of a propose() call.
//
// Device state per slot: the fused features f_t = fc . F_t (f32, max_ctx rows) and the layer's
// K/V rows in the paged layout of kernels/cuda/rope.h (one cache block of cap rows per slot),
// so the target's RoPE/KV-write and causal paged attention kernels serve the drafter.
//
// A round over R requests (x0 of request r at position s_r):
//   1. pending features (queued by on_commit, any requests) -> fc -> scattered into f;
//   2. rows built_r .. s_r - 1 of every request in one ragged pass: u = [RMSNorm(embed(y_t));
//      RMSNorm(f_t)], K/V written, causal attention; the last row of each request continues
//      (o-proj, residual from f, MLP, final norm, LM head) to x_1;
//   3. chain steps j = 1..g-1, one row per request at s_r - 1 + j fed (h of step j-1, x_j).
// Greedy rounds choose tokens on the device and sync once; requests sampling at temperature > 0
// make each step copy its logits to the host and draw there (exact p_d). Buffers are allocated
// at construction; propose() and on_commit() allocate nothing (but one sampler per request).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "models/drafters/cuda/gpu_drafter_context.h"
#include "models/drafters/drafter.h"
#include "models/drafters/drafter_compute.h"
#include "models/drafters/drafter_config.h"
#include "models/drafters/drafter_weights.h"

namespace dspark {

// Whether the GPU chain drafter runs this config (eagle3/mtp1, head_dim 64 or 128, widths
// multiples of 8, at most 8 query heads per KV head); `why` gets the reason when not.
bool cuda_chain_drafter_supports(const drafter_config& c, std::string* why = nullptr);

class cuda_chain_drafter final : public drafter {
 public:
  // Throws invalid_argument_error for a config it does not run or a target head of the wrong
  // shape, cuda_error when the device lacks memory.
  cuda_chain_drafter(drafter_config c, drafter_weights w, const drafter_target_head& target,
                     const drafter_runtime_params& p);
  ~cuda_chain_drafter() override;

  const drafter_caps& caps() const override { return caps_; }
  void begin(int32_t slot, std::span<const int32_t> prompt) override;
  void propose(std::span<const propose_request> batch, draft_batch& out) override;
  void on_commit(int32_t slot, const commit_info& c) override;
  void rollback(int32_t slot, int32_t n_context) override;
  void end(int32_t slot) override;
  void before_target_forward() override;

  const drafter_config& config() const { return c_; }
  size_t device_bytes() const;

  // Test view of the last propose(): the logits of chain step j (< g_max) for the last group's
  // request i, rows [g_max][V]. Only when set_record(true).
  void set_record(bool on) { record_ = on; }
  std::vector<float> recorded_logits(int32_t i) const;

 private:
  struct device_state;
  struct slot_info {
    bool open = false;
    int32_t n_feat = 0;  // f_t known (queued or written) for t < n_feat
    int32_t built = 0;   // K/V rows from target features for t < built
    draft_sampler_slot smp;
  };
  struct group_request {
    const propose_request* r;
    int32_t g;
  };
  slot_info& open_slot(int32_t slot);
  void drop_pending(int32_t slot, int32_t from);
  void flush_features();
  void run_group(std::span<const group_request> grp, draft_batch& out);
  slot_kv_cache kv_cache() const;

  drafter_config c_;
  drafter_runtime_params p_;
  drafter_caps caps_;
  int32_t group_size_ = 0;
  int32_t cap_ = 0;
  int32_t max_rows_ = 0;  // phase-2 rows per group
  int32_t pending_rows_ = 0;
  int32_t pending_max_ = 0;
  std::vector<slot_info> slots_;
  std::unique_ptr<device_state> d_;
  bool record_ = false;
  int32_t rec_r_ = 0;
};

}  // namespace dspark

// The parallel block drafters of docs/drafter-format.md: dspark (block + sequential Markov or
// RNN head + confidence head) and dflash (the block alone). One class; the config decides.
//
// Per slot the drafter keeps, per layer, K/V rows of context positions 0..n-1, each built
// from the target's features of that position only (c_t = RMSNorm(fc . F_t)); on_commit
// appends them as features arrive (prompt chunks after prefill, x0..x_a after each verify).
// A round for anchor x0 at position s = context.size() - 1 needs rows 0..s-1:
//
//   h = embed([x0, mask, ..., mask])               gamma rows at positions s..s+gamma-1
//   per layer: q,k,v of RMSNorm(h); block K/V written after the context rows (scratch);
//              every block query attends to all context rows + all gamma block rows (no mask)
//   U_k = lm_head(RMSNorm(h_k))                    k = 1..g (g = drafts asked for, <= gamma)
//   L_k = U_k + B_k(prev_k)                        B = 0 (markov none) | w2 w1[prev] | RNN
//   x_k ~ p_d,k = the request's filtered softmax(L_k / T) (argmax at T = 0)
//   c_k = sigmoid((conf . [h_k; w1[prev_k]] + b) / T_k)   (1 without a confidence head)
//
// A request whose context rows are incomplete (features missing) gets no drafts. Buffers are
// sized at construction (scratch) and at a slot's first begin() (its cache, max_ctx rows), so
// propose() and on_commit() allocate nothing (but one sampler per request on its first
// sampled round).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "models/drafters/drafter.h"
#include "models/drafters/drafter_compute.h"
#include "models/drafters/drafter_config.h"
#include "models/drafters/drafter_weights.h"

namespace dspark {

class dspark_drafter final : public drafter {
 public:
  // Throws invalid_argument_error when the config is not dspark/dflash or the head's shape
  // disagrees with the config's target.
  dspark_drafter(drafter_config c, drafter_weights w, const drafter_target_head& target,
                 const drafter_runtime_params& p);
  ~dspark_drafter() override;

  const drafter_caps& caps() const override { return caps_; }
  void begin(int32_t slot, std::span<const int32_t> prompt) override;
  void propose(std::span<const propose_request> batch, draft_batch& out) override;
  void on_commit(int32_t slot, const commit_info& c) override;
  void rollback(int32_t slot, int32_t n_context) override;
  void end(int32_t slot) override;

  const drafter_config& config() const { return c_; }
  int32_t context_rows(int32_t slot) const;

  // Debug/test view of the last propose() of one request: per drafted slot k (< g) the base
  // logits U_k, the draft logits L_k, and the confidence logit z_k (before calibration).
  // Recorded only when set_record(true) (tests); rows [g][V].
  void set_record(bool on) { record_ = on; }
  const std::vector<float>& recorded_base() const { return rec_base_; }
  const std::vector<float>& recorded_logits() const { return rec_logits_; }
  const std::vector<float>& recorded_conf() const { return rec_conf_; }
  // Forces prev_k for k >= 2 (teacher forcing, parity tests); empty = the drafted tokens.
  void force_prev(std::vector<int32_t> prev) { forced_prev_ = std::move(prev); }

 private:
  struct slot_state;
  slot_state& open_slot(int32_t slot);
  void append_context(slot_state& s, const target_features& f, int32_t pos0);
  void propose_one(const propose_request& r, draft_batch& out);
  void block_forward(slot_state& s, int32_t pos, int32_t x0);

  drafter_config c_;
  drafter_weights w_;
  drafter_runtime_params p_;
  drafter_caps caps_;
  std::unique_ptr<drafter_compute> cp_;
  // Per layer i at 7i..7i+6: wq wk wv wo gate up down; then fc, then markov w2 (markov), then
  // rnn (rnn): the f32 drafter weights as the kernels see them.
  std::vector<tensor_view> views_;
  std::vector<float> inv_freq_;         // [head_dim / 2] RoPE inverse frequencies
  std::vector<std::unique_ptr<slot_state>> slots_;
  // Scratch: [gamma] block rows or [chunk] context rows.
  int64_t chunk_ = 64;
  std::vector<float> feat_, h_, a_, q_, k_, v_, attn_, gate_, up_, logits_;
  std::vector<float> mk_, rnn_z_, rnn_out_, rnn_s_, conf_in_;
  bool record_ = false;
  std::vector<float> rec_base_, rec_logits_, rec_conf_;
  std::vector<int32_t> forced_prev_;
};

}  // namespace dspark

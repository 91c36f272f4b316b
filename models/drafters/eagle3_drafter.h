// EAGLE-3 and MTP-1 (docs/drafter-format.md): one autoregressive layer over fused target
// features. One class; mtp1 is eagle3 with target_layers = [n_layer - 1] and a chain of 1.
//
// A draft row at position t pairs f_t = fc . F_t with the next token y = token(t + 1):
//   u = [RMSNorm(embed(y); input_norm); RMSNorm(f_t; hidden_norm)]      (2d)
//   q,k,v = W u, RoPE at t; causal attention over the slot's rows 0..t
//   h = f_t + attn_output(attn);  h += MLP(RMSNorm(h; ffn_norm))
//   logits = lm_head(RMSNorm(h; norm))                                   predict token t + 2
//
// Per slot the drafter stores the fused features f_t of every position the target reported
// (on_commit) and K/V rows for positions < built. A propose with anchor x0 at s first builds
// the pending committed rows built..s-1 (the last, (f_{s-1}, x0), gives x_1), then chains:
// step j >= 1 feeds (h of the previous step, x_j) at position s-1+j. Chain rows are scratch:
// built stays s, so the next round overwrites them with rows from the target's features.
// Confidence is 1 (no head; the scheduler's online estimate replaces it, issue 7).
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

class eagle3_drafter final : public drafter {
 public:
  // Throws invalid_argument_error when the config is not eagle3/mtp1 or the head's shape
  // disagrees with the config's target.
  eagle3_drafter(drafter_config c, drafter_weights w, const drafter_target_head& target,
                 const drafter_runtime_params& p);
  ~eagle3_drafter() override;

  const drafter_caps& caps() const override { return caps_; }
  void begin(int32_t slot, std::span<const int32_t> prompt) override;
  void propose(std::span<const propose_request> batch, draft_batch& out) override;
  void on_commit(int32_t slot, const commit_info& c) override;
  void rollback(int32_t slot, int32_t n_context) override;
  void end(int32_t slot) override;

  const drafter_config& config() const { return c_; }

  // Tests: record each chain step's logits ([g][V]) and force x_1..x_{g-1} (teacher forcing).
  void set_record(bool on) { record_ = on; }
  const std::vector<float>& recorded_logits() const { return rec_logits_; }
  void force_chain(std::vector<int32_t> chain) { forced_chain_ = std::move(chain); }

 private:
  struct slot_state;
  slot_state& open_slot(int32_t slot);
  // Appends K/V rows for positions [t0, t0 + n) (u from f = fused[t], y = tokens[t + 1]);
  // when last_out is set, runs the rest of the layer for row t0 + n - 1 into h_ (pre-norm).
  void build_rows(slot_state& s, const float* f, std::span<const int32_t> next_tokens, int32_t t0, int64_t n,
                  bool last_out);
  void propose_one(const propose_request& r, draft_batch& out);

  drafter_config c_;
  drafter_weights w_;
  drafter_runtime_params p_;
  drafter_caps caps_;
  std::unique_ptr<drafter_compute> cp_;
  std::vector<tensor_view> views_;   // wq wk wv wo gate up down fc
  std::vector<float> inv_freq_;
  std::vector<std::unique_ptr<slot_state>> slots_;
  int64_t chunk_ = 64;
  std::vector<float> feat_, u_, tmp_, q_, k_, v_, attn_, h_, hn_, gate_, up_, logits_, fchain_;
  bool record_ = false;
  std::vector<float> rec_logits_;
  std::vector<int32_t> forced_chain_;
};

}  // namespace dspark

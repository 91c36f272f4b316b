// Layer-skip self-speculation: the target's first K layers, then its final norm and LM head,
// draft the next tokens (no extra weights; the draft model is a prefix of the target).
//
// Two placements of the draft's KV:
//   own cache (default): a backend built over a view of the target's weights truncated to K
//     layers (config n_layer = K; the tensor views point into the same file mapping, so no
//     weight is copied), with its own KV: K/L of the target's KV memory more;
//   shared cache (params.shared_target): drafting runs on the target's own sequences through
//     backend::forward_prefix(batch, K). The target's KV already holds the committed context at
//     every layer (layers < K computed exactly as the draft would), so there is no catch-up:
//     propose feeds x0 and the drafts at K layers, then truncates the target's sequence back to
//     the committed length (O(1)); the verify forward rewrites all layers there. No draft
//     memory at all, and no re-feeding of accepted tokens.
// The compute per draft token is the same either way.
//
// Per request the draft cache holds a prefix of the context; propose() first feeds what is
// missing (the prompt the first time, afterwards x0 and any accepted draft not yet fed), then
// drafts one token per batched forward:
//
//   draft KV before propose:  ctx[0 .. kv)                 kv <= len(ctx) - 1
//   catch-up forward:          ctx[kv .. len)  -> logits -> x_1
//   draft forwards:            x_1 -> x_2, ..., x_{g-1} -> x_g   (x_g is never fed)
//   on_commit(a accepted):     truncate the draft KV to len_before + min(a, g - 1)
//
// Drafts: greedy (one-hot) at temperature 0; otherwise sampled from the request's own filtered
// distribution of the draft logits (dense p_d), keyed by (seed, round, position, draft).
// Confidence c_k = the draft distribution's largest probability, computed before x_k is drawn;
// with stop_below > 0 drafting stops once the product c_1...c_k drops below it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "engine/backend.h"
#include "engine/sampler.h"
#include "models/arch/llama_weights.h"
#include "models/arch/model_config.h"
#include "models/drafters/drafter.h"

namespace dspark {

// Builds the draft backend over the truncated config and weights (which outlive it).
using draft_backend_factory =
    std::function<std::unique_ptr<backend>(const model_config& c, const llama_weights& w)>;

struct layerskip_drafter_params {
  int32_t n_layers = 8;    // K, in [1, target n_layer]
  int32_t max_slots = 1;   // request slots
  bool sampled = true;     // sample at temperature > 0 (dense p_d); false: always greedy
  // Stop drafting a request once the product of its confidences falls below this, in [0, 1]
  // (0: always draft the full budget). Lossless: the decision to draft x_k uses c_1..c_k,
  // which are computed before x_k is drawn.
  float stop_below = 0.0f;
  // Draft on the target's KV (see above): the target backend, which must outlive the drafter
  // and support forward_prefix(). Null: an own cache from the factory.
  backend* shared_target = nullptr;
};

class layerskip_drafter final : public drafter {
 public:
  // c and w are the target's; the drafter keeps truncated copies of the structs (views only).
  // Throws invalid_argument_error for K out of range or a backend whose n_seq_max < max_slots.
  layerskip_drafter(const model_config& c, const llama_weights& w, const layerskip_drafter_params& p,
                    const draft_backend_factory& make_backend);
  ~layerskip_drafter() override;

  const drafter_caps& caps() const override { return caps_; }
  void begin(int32_t slot, std::span<const int32_t> prompt) override;
  void propose(std::span<const propose_request> batch, draft_batch& out) override;
  void on_commit(int32_t slot, const commit_info& c) override;
  void rollback(int32_t slot, int32_t n_context) override;
  void end(int32_t slot) override;

  // The backend drafts run on: the own draft backend, or the shared target.
  backend& draft_backend() { return p_.shared_target ? *p_.shared_target : *be_; }

 private:
  struct slot_state {
    bool open = false;
    int32_t seq = -1;
    int32_t ctx_len = 0;               // context length the drafter has been told about
    int32_t want = 0;                  // drafts to make in the current propose
    double survival = 1.0;             // product of this propose's confidences so far
    std::optional<sampler> smp;        // made on the first sampled propose of the request
  };
  slot_state& open_slot(int32_t slot);
  // Feeds tokens[i] to the sequences of items, one logit row each (split by the backend's
  // limits), and calls pick(i, logits_row) for every item.
  template <class Pick>
  void feed(size_t n_items, Pick&& pick);
  void pick(const propose_request& r, const float* logits, draft_batch& out);
  forward_output run(const forward_batch& fb);  // forward (own) or forward_prefix (shared)

  layerskip_drafter_params p_;
  drafter_caps caps_;
  model_config cfg_;       // target config with n_layer = K
  llama_weights w_;        // target weights, layers [0, K)
  std::unique_ptr<backend> be_;
  std::vector<slot_state> slots_;          // [max_slots]
  // Per-propose scratch, [max_slots] each.
  std::vector<const propose_request*> act_;
  std::vector<std::span<const int32_t>> feed_tokens_;
  std::vector<int32_t> feed_seq_;
  std::vector<int32_t> tok_buf_;           // [max_tokens_per_step]
  std::vector<batch_sequence> seqs_;
  std::vector<std::pair<int32_t, int32_t>> restore_;  // shared: (target seq, length) to truncate back to
};

}  // namespace dspark

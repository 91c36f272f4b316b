// The contract every drafter implements: n-gram and layer-skip now; DSpark, DFlash, EAGLE-3 and
// MTP-1 later. One interface, one verifier (engine/spec/verify.h), one decoding loop
// (engine/spec/spec_decoder.h).
//
// The decoding cycle of one request (chain drafting, as in every drafter of the method doc):
//
//   begin(slot, prompt)                      the drafter sees the prompt
//        |
//   target prefill over the prompt, in chunks:
//     per chunk, when caps().capture_layers is non-empty:
//       on_commit(slot, {} tokens, features of the chunk's rows, features_pos0 = chunk start)
//   ------------------------------------------> x0 = first token (sampled from p_t)
//   on_commit(slot, {x0}, no features)         x0's features arrive with the first verify
//        |
//   +--> propose(batch)          drafter writes x_1..x_g with p_d(x_k) and confidence c_k,
//   |        |                   g <= the policy's draft budget
//   |    policy.plan(batch)      truncates each chain to a prefix l <= g (sees the whole batch)
//   |        |
//   |    target forward over [x0, x_1..x_l]   ONE ragged pass for all requests: l+1 logit rows
//   |        |
//   |    verify                  accepts x_1..x_a (a <= l), then one correction (a < l) or
//   |        |                   bonus (a == l) token y drawn from the target
//   |    target KV truncate      drops the rows of x_{a+1}..x_l (O(1))
//   |    on_commit(slot, {x_1..x_a, y}, target features of rows x0..x_a)
//   |        |                   the drafter keeps accepted state, drops the rest
//   +--- y becomes the next x0, until EOS / max tokens / stop string / cancel
//        |
//   end(slot)                                  the drafter frees the slot's state
//
// rollback(slot, n) discards drafter state past the first n context tokens; the decoder calls it
// when a step is abandoned (the target ran out of KV, the request was edited).
//
// Split-phase propose (the pipelined decoder, spec_decoder_options::pipeline): propose_begin
// starts a propose, propose_end waits for its drafts, so a drafter that computes elsewhere (its
// own thread: threaded_drafter.h; its own process: actors/remote_drafter.h) drafts one group of
// requests while the target verifies the other. The ordering guarantee stays per slot: the
// on_commit of a slot's round always precedes the next propose that includes the slot, and a
// slot's calls reach the drafter in the order they are made.
//
// Distributions: a drafter must report the EXACT distribution each draft was drawn from,
// including its own temperature and filtering: the verifier's min(1, p_t/p_d) test and
// max(p_t - p_d, 0) residual are lossless only for that p_d. A drafter that picks tokens
// deterministically reports a one-hot. The target's output is exact whatever p_d is; a closer
// p_d only raises acceptance.
//
// Confidence: c_k in [0, 1] estimates P(draft k accepted | drafts < k accepted). It must be
// computed without looking at x_k itself (only at x_<k and the context): the policy truncates
// on cumulative confidences, and an admission decision that depended on the token being
// admitted would bias the output (method doc 3.2, Appendix A). Drafters without an estimate
// report 1.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "engine/spec/counter_rng.h"
#include "engine/spec/draft_batch.h"

namespace dspark {

// Target hidden states of some rows of one request, as captured by the backend's forward
// (engine/backend.h capture_layers): the residual stream after each chosen layer.
struct target_features {
  // [n_layers][layer_stride] f32, host; this request's row i of layer l is at
  // data + l * layer_stride + (row0 + i) * n_embd. Null when no layers were captured.
  const float* data = nullptr;
  int32_t n_layers = 0;
  int32_t n_rows = 0;       // rows of this request
  int64_t row0 = 0;         // first row of this request within the forward's logit rows
  int64_t n_embd = 0;
  int64_t layer_stride = 0; // floats between layers (forward's n_rows * n_embd)
  // The same rows in the target's device memory (a CUDA target, to a drafter whose caps list
  // reads_device_features), else null; data may then be null. Row i of layer l is at
  // device + l * device_layer_stride + (row0 + i) * n_embd. The target's next forward rewrites
  // them: before it the decoder calls drafter::before_target_forward(), by which time the
  // drafter has enqueued its reads and made device_stream (the target's cudaStream_t) wait for
  // them.
  const float* device = nullptr;
  int64_t device_layer_stride = 0;
  void* device_stream = nullptr;

  bool empty() const { return (data == nullptr && device == nullptr) || n_rows <= 0; }
  // Row i (of this request) of captured layer l: [n_embd] f32, host (data non-null).
  const float* row(int32_t l, int32_t i) const {
    return data + static_cast<int64_t>(l) * layer_stride + (row0 + i) * n_embd;
  }
};

// What the target committed for one request in one step.
struct commit_info {
  // Tokens appended to the context this step: after prefill {x0}; after a verify round the
  // accepted drafts then the correction/bonus {x_1..x_a, y} (without y when an accepted stop
  // token ended the request).
  std::span<const int32_t> tokens;
  int32_t n_accepted = 0;   // accepted drafts among tokens (0 after prefill)
  int32_t n_proposed = 0;   // drafts verified this round (l)
  // Target features (only when the drafter lists capture_layers): after a prefill chunk (tokens
  // empty) the chunk's prompt rows; after a round the rows x0..x_a; none with the on_commit of
  // x0 after prefill. Row i is the target's state at context position features_pos0 + i, so a
  // drafter's feature rows arrive in position order without gaps: prompt chunks 0..P-1, then
  // each round x0..x_a at (context length before the round - 1) onwards.
  target_features features;
  int32_t features_pos0 = 0;
};

// One request in a propose call.
struct propose_request {
  int32_t slot = 0;                   // the request's slot, [0, max_slots)
  int32_t max_drafts = 0;             // propose at most this many (the policy's budget)
  std::span<const int32_t> context;   // prompt + committed tokens; context.back() is x0
  rng_key rng;                        // (seed, round) for stochastic drafters; use rng_purpose::draft
  // The request's sampling parameters: a drafter that samples should draw from the same
  // filtered, temperature-scaled distribution (engine/sampler.h) for high acceptance. Null or
  // temperature 0: draft greedily.
  const sampling_params* sampling = nullptr;
  // The request's sequence in the target backend, for drafters that draft on the target's own
  // KV (layer-skip with a shared cache). It holds the context except x0; such a drafter must
  // truncate it back to that length before propose() returns.
  int32_t target_seq = -1;
};

// What a drafter needs from the decoder, declared once at construction.
struct drafter_caps {
  std::string name;                                // "ngram", "layerskip:8", ...
  draft_dist_kind dist_kind = draft_dist_kind::one_hot;
  int32_t max_sparse = 0;                          // for sparse distributions
  bool has_confidence = false;                     // c_k are real estimates, not 1
  std::vector<int32_t> capture_layers;             // target layers whose features it needs
  // Drafts on the target's own backend (propose runs its forward: layer-skip with a shared
  // cache), so it cannot run while the target's forward does; the decoder does not pipeline it.
  bool shares_target = false;
  // Reads the captured rows where the target keeps them (target_features::device) when the
  // target has them in device memory, so the target need not copy them to the host; the
  // drafter then implements before_target_forward().
  bool reads_device_features = false;
};

class drafter {
 public:
  virtual ~drafter() = default;

  // Capabilities; constant for the drafter's lifetime.
  virtual const drafter_caps& caps() const = 0;

  // A request starts in `slot` with this prompt (the slot was free).
  virtual void begin(int32_t slot, std::span<const int32_t> prompt) = 0;
  // Writes up to r.max_drafts drafts for every request of `batch` into out (slot rows, which
  // the caller has cleared). Proposing fewer, even 0, is allowed.
  virtual void propose(std::span<const propose_request> batch, draft_batch& out) = 0;
  // Split-phase propose: starts proposing `batch` into `out`; propose_end() waits until the
  // drafts are written. At most one propose is in flight. Until propose_end returns the caller
  // keeps `batch`, the contexts it points to and `out` alive and unchanged, reads none of the
  // batch's rows of out, and calls begin / on_commit / rollback / end only for slots that are
  // NOT in the batch (they reach the drafter after the propose, in call order). The defaults
  // propose synchronously in propose_begin; propose_end then has nothing to wait for.
  virtual void propose_begin(std::span<const propose_request> batch, draft_batch& out) { propose(batch, out); }
  virtual void propose_end() {}
  // The target committed c.tokens for `slot`; keep what they confirm, drop the rest.
  virtual void on_commit(int32_t slot, const commit_info& c) = 0;
  // Discards state past the first n_context tokens (prompt + committed) of `slot`.
  virtual void rollback(int32_t slot, int32_t n_context) = 0;
  // The request in `slot` finished or was cancelled; free its state.
  virtual void end(int32_t slot) = 0;
  // The decoder is about to run the target's next forward, which rewrites the device features
  // of the last one (target_features::device): enqueue every read of them still deferred and
  // order the target's stream after it. Called before every target forward; a drafter that
  // does not read device features has nothing to do.
  virtual void before_target_forward() {}
};

}  // namespace dspark

// The speculative generation loop over a backend: a batch of requests, each step one ragged
// target forward that verifies every request's drafts at once.
//
// Per step:
//   1. prefill newly added requests (chunked like generate(); while others decode, one chunk
//      per step, so a long prompt does not stall them; the prompts of a step share one
//      forward, and while others decode that forward is step 4's verify forward:
//      options.fused_prefill), sample x0 from the last row;
//   2. drafter.propose for every decoding request (up to the policy's budget, capped by the
//      tokens left before max_tokens and the context);
//   3. policy.plan truncates each chain to l_r drafts (it sees the whole batch);
//   4. ONE forward over [x0, x_1..x_l] per request (split only when the backend's per-step
//      limits are exceeded), l + 1 logit rows each (+ captured features for the drafter);
//      when every request in it is greedy, only each row's argmax id comes back (backend.h);
//   5. verify: greedy at temperature 0, rejection sampling otherwise, against the sampler's
//      filtered distribution (engine/sampler.h), keyed by (seed, round, position);
//   6. commit accepted drafts + correction/bonus through the plain generator's stop rules;
//   7. truncate the target KV to the committed length (O(1)), on_commit the drafter.
//
// Sequence layout of one request between steps (ctx = prompt + committed tokens):
//
//   ctx:      [ p_0 ... p_{P-1} | t_0 ... t_{k-1} ]     x0 = t_{k-1} = ctx.back()
//   KV holds:  ctx[0 .. len-1)                          x0 is fed by the next verify forward
//   verify:    appends x0, x_1..x_l at positions len-1 .. len-1+l, then truncates to
//              len-1 + 1 + a (x0 and the a accepted drafts stay; rejected rows roll back)
//
// Lossless at temperature 0: every committed token is the target argmax given the committed
// prefix, and stop conditions are the generator's, so the output equals generate() token for
// token whenever the backend's logits for a row do not depend on the other rows of its batch.
//
// Prefix caching (options.prefix_cache, off by default; `dspark serve` turns it on): add()
// attaches the backend's cached K/V for the longest run of full blocks the prompt starts with
// (backend::attach_prefix) and prefill forwards only the rest; every prefill chunk publishes
// the request's new full prompt blocks, and finish() publishes its committed tokens' blocks
// (prompt + generated, the verified part only) before freeing the sequence, so a later request
// repeating the conversation reuses them too. Off while the drafter reads target features
// (it needs every prompt row's). The output is unchanged: with batch-invariant rows the cached
// K/V are the ones a cold prefill computes, bit for bit.
//
// Pipelined mode (options.pipeline, off by default): the decoding requests alternate in two
// groups, so the drafter drafts one while the target verifies the other. A step verifies the
// group drafted in the previous step (A) and, before its forward, starts drafting every other
// decoding request (B: the ones A's forward does not touch, which committed in the previous step,
// and requests that just finished their prefill) through drafter::propose_begin; the drafts of B
// are collected (propose_end) at the start of the next step, which verifies B. With a drafter
// that computes elsewhere (threaded_drafter, remote_drafter) B's drafting runs during A's
// forward, commit and the next prefill.
//
//   step n:    propose_end(A)  propose_begin(B)  plan(A)  forward(A)  commit(A) -> on_commit(A)
//   step n+1:  propose_end(B)  propose_begin(A') plan(B)  forward(B)  commit(B) -> on_commit(B)
//
// Each request still sees propose -> plan -> verify -> commit -> on_commit in order, with the
// same budget, rng keys (seed, round, position) and policy rules, so the output is the same as
// the synchronous loop's: at temperature 0 equal to generate(). What changes: the policy plans
// each group on its own (a verify batch is one group), and a group's drafts wait one step. When
// no drafts are in flight (start-up, or the drafted group all finished) and two or more requests
// decode, the first half is drafted synchronously and the rest in flight; with a single decoding
// request there is nothing to overlap and the step runs in the synchronous order. Cancelling or
// finishing a request whose drafts are in flight first waits for them (propose_end). Drafters
// that draft on the target's backend (caps().shares_target) are never pipelined.
//
// Speculation gate (options.gate, off by default; engine/spec/spec_gate.h): where speculation
// does not pay at the current load (a batch limit, or measured: the drafts accepted per
// request-step against the drafter's share of the step), requests that join decode without the
// drafter and the drafting ones are detached (drafter::end) after the step; a forward captures
// target features only while one of its requests still drafts, so a fully detached batch runs
// plain decoding's forward. A detached request stays plain to its end. Output is unchanged in
// kind: a request without drafts is verified like any other with l = 0.
//
// The hot path allocates nothing of its own: every per-step buffer is sized at construction for
// max_requests x (gamma_max + 1); only the tokenizer's text streaming allocates strings.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "engine/backend.h"
#include "engine/generator.h"
#include "engine/sampler.h"
#include "engine/spec/draft_batch.h"
#include "engine/spec/metrics.h"
#include "engine/spec/online_confidence.h"
#include "engine/spec/policy.h"
#include "engine/spec/request_output.h"
#include "engine/spec/spec_gate.h"
#include "models/drafters/drafter.h"

namespace dspark {

class tokenizer;

struct spec_decoder_options {
  int32_t max_requests = 1;    // requests decoded together, [1, backend n_seq_max]
  int32_t prefill_chunk = 256; // prompt tokens per prefill forward (as generate_options), and per
                               // step while other requests are decoding
  bool prefix_cache = false;   // reuse and publish KV blocks through the backend's prefix cache
  bool pipeline = false;       // draft one group of requests while the other verifies (above)
  spec_gate_params gate = {};  // speculation off where it does not pay (spec_gate.h; off by default)
  bool shared_prefill = true;  // the prompts joining in a step share a forward (false: one each,
                               // as before 2026-12-06; kept for A/B measurements)
  // While requests decode, the step's prompt chunks ride in the verify forward instead of a
  // forward of their own (one pass over the weights per step instead of two; on the H100, 8B
  // shape, plain decoding +46% at 64 requests, +15% at 256: docs/benchmarks.md 2026-12-06 fifth
  // session). false: a forward of their own, as before (A/B runs). On the CUDA backend a fused
  // forward may leave the GEMV path for that step's decode rows, so greedy tokens can differ
  // from a lone generate()'s wherever a large batch's would; the CPU backend's rows never do.
  bool fused_prefill = true;
};

// Pipelined-mode counters (all zero otherwise).
struct pipeline_stats {
  int64_t overlapped_rounds = 0;  // verify rounds with another group's propose in flight
  int64_t sync_rounds = 0;        // verify rounds in the synchronous order (single request, ...)
  double propose_wait_s = 0;      // decoder blocked in propose_end / synchronous proposes
  double verify_s = 0;            // in verify forwards (plan to commit), any mode
};

// A finished request: the plain generator's result plus speculative metrics.
struct spec_result {
  generation_result gen;
  spec_metrics metrics;
  bool cancelled = false;
};

class spec_decoder {
 public:
  // be, policy (and drafter, tok when non-null) must outlive the decoder. drafter null: no
  // drafts (plain decoding through this loop). Throws invalid_argument_error when
  // max_requests is out of range or the policy's budget does not fit the backend's limits.
  spec_decoder(backend& be, drafter* d, spec_policy& policy, const tokenizer* tok,
               std::span<const int32_t> stop_ids, const spec_decoder_options& opt = {});
  ~spec_decoder();
  spec_decoder(const spec_decoder&) = delete;
  spec_decoder& operator=(const spec_decoder&) = delete;

  // Queues a request and returns its id. Throws invalid_argument_error for invalid params
  // (validate()), an empty prompt, a prompt leaving no room in the context, stop strings
  // without a tokenizer, or no free request slot.
  int32_t add(std::span<const int32_t> prompt, const sampling_params& params,
              token_callback on_token = {});
  // One step for every active request (prefill of new ones, one verify round for the rest).
  // Returns the number of requests still active.
  int32_t step();
  // Steps until no request is active.
  void run();
  // True once the request stopped (or was cancelled); its result is ready to take().
  bool finished(int32_t id) const;
  // Stops the request now: frees its KV and drafter state; take() returns what was committed.
  void cancel(int32_t id);
  // The finished request's result; frees its id for reuse.
  spec_result take(int32_t id);
  // Metrics merged over every request taken so far.
  const spec_metrics& metrics() const { return total_; }
  int32_t gamma_max() const { return gamma_max_; }
  // True when requests attach and publish cached prefixes (the option, and no feature drafter).
  bool prefix_cache() const { return prefix_cache_; }
  int32_t max_requests() const { return opt_.max_requests; }
  // True when steps pipeline drafting and verification (the option, a drafter that allows it).
  bool pipelined() const { return pipeline_; }
  const pipeline_stats& pipeline_counters() const { return pstats_; }
  // The speculation gate (options.gate): its state and counters.
  const spec_gate& gate() const { return gate_; }

 private:
  struct request;
  struct step_buffers;
  request& get(int32_t id, const char* who);
  // One forward's chunk of a waiting prompt: ctx[pos, pos + n), last = the prompt's end.
  struct prefill_piece {
    request* r;
    int32_t pos;
    int32_t n;
    bool last;
  };
  // Prefills up to `budget` prompt tokens of the waiting requests, in slot order, several
  // prompts per forward; samples x0 of each prompt that is in.
  void prefill_pending(int32_t budget);
  // One round of prefill_pending: the next chunk of each waiting prompt (admitted) into
  // buf_->pieces within `budget` (decreased) and one forward's limits; false when none.
  bool collect_prefill_round(int32_t& budget);
  // Writes the pieces' tokens and sequences (every prompt row captured for a feature-reading
  // drafter) and folds their needs into capture / all_greedy; returns the tokens written.
  size_t stage_prefill(std::span<const prefill_piece> pieces, int32_t* tokens, batch_sequence* seqs,
                       bool& capture, bool& all_greedy) const;
  // The features of rows [row0, row0 + n_rows) of forward o (none when it captured none), in
  // device memory too when the drafter reads them there.
  target_features features_of(const forward_output& o, int32_t n_layers, int32_t n_rows, int64_t row0) const;
  // be_.forward, after the drafter's deferred reads of the last forward's device features; asks
  // for captured rows in device memory only when the drafter reads them there.
  forward_output target_forward(forward_batch& fb);
  // After the forward that carried them: positions, prefix cache, features to the drafter, and
  // x0 of each finished prompt; `row` / `hidden_row` are their first logit / hidden rows.
  void land_prefill(std::span<const prefill_piece> pieces, const batch_sequence* seqs, const forward_output& o,
                    int64_t row, int64_t hidden_row, size_t n_layers);
  // A joining request gets the drafter (begin) unless the gate is closed at the load it joins:
  // the decoding requests and `joining` others whose prompts share its forward.
  void admit(request& r, int32_t joining);
  void prefill_forward(std::span<const prefill_piece> pieces);
  // r drafts with a drafter that reads the target's captured hidden rows.
  bool reads_features(const request& r) const;
  // x0 from the prompt's last row (argmax id or logit row), committed like any token.
  void first_token(request& r, const float* logits, int32_t argmax);
  void verify_round(std::span<request*> reqs);
  void pipelined_round(std::span<request*> active);
  // Proposes for reqs (budgets capped by max_tokens and the context); async: propose_begin.
  void propose_group(std::span<request*> reqs, bool async);
  // Waits for the propose in flight, if any.
  void end_propose();
  // Online confidences, plan, forward(s), commit for reqs whose drafts are in.
  void plan_and_verify(std::span<request*> reqs);
  // One verify forward for reqs, carrying the prompt chunks `pieces` after their rows.
  void run_forward(std::span<request*> reqs, std::span<const prefill_piece> pieces = {});
  void commit_round(request& r, const forward_output& out, int64_t row0);
  void finish(request& r);
  // Takes r off the drafter for good (the gate closed): it decodes plainly from now on.
  void detach(request& r);
  // Feeds the gate this step's figures (requests that took a verify round, those of them
  // drafting) and detaches every drafting request if it closed.
  void apply_gate(int32_t decoded, int32_t drafting, std::chrono::steady_clock::time_point t_step,
                  const graph_launch_stats& at_step_start);
  // Requests past their prefill and not finished.
  int32_t decoding_count() const;

  backend& be_;
  drafter* drafter_;
  spec_policy& policy_;
  const tokenizer* tok_;
  std::span<const int32_t> stop_ids_;
  spec_decoder_options opt_;
  int32_t gamma_max_ = 0;
  bool prefix_cache_ = false;
  bool pipeline_ = false;
  bool in_flight_ = false;   // a propose_begin awaits its propose_end
  pipeline_stats pstats_;
  spec_gate gate_;
  double step_drafter_s_ = 0.0;  // this step's seconds in drafter calls (the gate's cost)
  int32_t step_accepted_ = 0;    // drafts accepted this step
  double step_prefill_s_ = 0.0;  // this step's seconds in prefill chunks (the gate leaves them out)
  bool fuse_pending_ = false;    // buf_->pieces wait for this step's verify forward (fused_prefill)
  std::vector<std::unique_ptr<request>> reqs_;  // [max_requests], null = free id
  std::unique_ptr<step_buffers> buf_;
  // Confidences for drafters without a head: the policy then schedules on each request's
  // observed per-position acceptance (engine/spec/online_confidence.h). Empty otherwise.
  std::optional<online_confidence> online_;
  spec_metrics total_;
};

// Generates one request speculatively on a fresh sequence (the counterpart of generate()).
spec_result spec_generate(backend& be, drafter* d, spec_policy& policy, const tokenizer* tok,
                          std::span<const int32_t> stop_ids, std::span<const int32_t> prompt,
                          const sampling_params& params, const token_callback& on_token = {});

// Decodes every prompt through `dec`, max_requests() at a time: as soon as a request finishes,
// its slot takes the next prompt (continuous batching). With per_prompt_seed, prompt i is
// sampled with seed params.seed + i (reproducible whatever the batch). Results in prompt order.
std::vector<spec_result> spec_generate_all(spec_decoder& dec, std::span<const std::vector<int32_t>> prompts,
                                           const sampling_params& params, bool per_prompt_seed);

}  // namespace dspark

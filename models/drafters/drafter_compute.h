// What the trained drafters (dspark/dflash, eagle3/mtp1) share: the target's embedding and LM
// head, a thread pool with matmul scratch, and the step that turns a draft row's logits into a
// drafted token with its exact distribution.
//
// The LM head is the target's own tensor in its stored dtype (quantized in a GGUF): matmul()
// reads it in place through the CPU backend's kernels, by default with q8 activations like the
// backend (the same speed as the target's head; no 113 MB f32 copy for SmolLM2's 49152 x 576
// head). Drafter-owned weights are f32 and always use float math.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>

#include "engine/sampler.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"
#include "models/drafters/drafter.h"
#include "models/drafters/drafter_config.h"
#include "models/drafters/drafter_weights.h"
#include "models/formats/tensor_view.h"

namespace dspark {

// The target model pieces a drafter borrows (views into the target's weights, which outlive it).
struct drafter_target_head {
  tensor_view embed;    // [n_vocab, n_embd] token embedding
  tensor_view lm_head;  // [n_vocab, n_embd] output projection (the embedding when tied)
};

struct drafter_runtime_params {
  int32_t max_slots = 1;       // request slots
  int32_t max_ctx = 4096;      // longest context (prompt + generated) a slot holds
  int n_threads = 0;           // 0 = the process's CPUs
  bool sampled = true;         // draw from p_d at temperature > 0 (dense); false: greedy only
  // Precision of the LM head matmul (quantized heads only): q8 like the CPU backend, or f32
  // activations for tight comparisons.
  matmul_precision head_precision = matmul_precision::q8_activations;
};

// The checks every trained drafter's constructor makes: the target head is [target_n_vocab,
// n_embd] and the runtime sizes are positive. Throws invalid_argument_error prefixed by `who`.
void check_drafter_setup(const drafter_config& c, const drafter_target_head& t, const drafter_runtime_params& p,
                         const char* who);

class drafter_compute {
 public:
  // max_tokens: the most rows any linear() or head() call gets; `weights`: every matrix the
  // drafter multiplies (sizes the scratch).
  drafter_compute(const drafter_target_head& t, const drafter_runtime_params& p, int64_t max_tokens,
                  std::span<const tensor_view> weights);

  thread_pool& pool() { return pool_; }
  const drafter_target_head& target() const { return t_; }
  int64_t n_vocab() const { return t_.lm_head.n_rows(); }
  // y[n, out] = x[n, in] . w^T (f32 drafter weight).
  void linear(const tensor_view& w, const float* x, int64_t n, float* y);
  // logits[n, V] = lm_head . x[n, d] (x already final-normed).
  void head(const float* x, int64_t n, float* logits);
  // dst[d] = the target's embedding row of `token`.
  void embed(int32_t token, float* dst) const;

 private:
  drafter_target_head t_;
  matmul_precision head_precision_;
  thread_pool pool_;
  std::unique_ptr<void, void (*)(void*)> workspace_;
};

// Per-slot sampler state for drafting at the request's own temperature/filters.
struct draft_sampler_slot {
  std::optional<sampler> smp;  // made on the request's first sampled propose (once per request)
};

// Appends draft k (= out.length(slot)) of request `r` drawn from `logits` [V]: a one-hot argmax
// when greedy (temperature 0, no sampling, or !sampled), else a draw from the request's
// filtered distribution written as the dense p_d row. Returns the token.
int32_t push_draft(const propose_request& r, const float* logits, int64_t n_vocab, bool sampled, float confidence,
                   draft_sampler_slot& s, draft_batch& out);

// Whether a commit's features extend a trained drafter's context: false when it carries none;
// invalid_argument_error (prefixed by `who`) when their shape is not the config's, when they
// start past the `known` positions (a gap) or end past max_ctx, or when they are in device
// memory only (target_features::device) and the caller does not read them there (device_ok).
bool check_commit_features(const target_features& f, int32_t pos0, int32_t known, const drafter_config& c,
                           int32_t max_ctx, const char* who, bool device_ok = false);

// Gathers host feature row i of `f` (the listed layers concatenated) into dst[n_layers * n_embd].
void gather_feature_row(const target_features& f, int32_t i, float* dst);

}  // namespace dspark

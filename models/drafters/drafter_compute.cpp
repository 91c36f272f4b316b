// drafter_compute: the target head and kernels as the trained drafters use them.
#include "models/drafters/drafter_compute.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "common/error.h"
#include "engine/cpu_backend.h"
#include "engine/spec/verify.h"

namespace dspark {

void check_drafter_setup(const drafter_config& c, const drafter_target_head& t, const drafter_runtime_params& p,
                         const char* who) {
  if (t.lm_head.n_rows() != c.target_n_vocab || t.lm_head.row_length() != c.n_embd)
    throw invalid_argument_error(std::string(who) + ": the target head is [" + std::to_string(t.lm_head.n_rows()) +
                                 ", " + std::to_string(t.lm_head.row_length()) + "], the drafter expects [" +
                                 std::to_string(c.target_n_vocab) + ", " + std::to_string(c.n_embd) + "]");
  if (p.max_slots < 1 || p.max_ctx < 1)
    throw invalid_argument_error(std::string(who) + ": max_slots and max_ctx must be >= 1");
}

drafter_compute::drafter_compute(const drafter_target_head& t, const drafter_runtime_params& p, int64_t max_tokens,
                                 std::span<const tensor_view> weights)
    : t_(t),
      head_precision_(p.head_precision),
      pool_(p.n_threads > 0 ? p.n_threads : default_thread_count()),
      workspace_(nullptr, std::free) {
  if (t.embed.shape.size() != 2 || t.lm_head.shape.size() != 2 || t.embed.shape != t.lm_head.shape)
    throw invalid_argument_error("drafter: the target's embedding and LM head must both be [n_vocab, n_embd]");
  size_t ws = matmul_workspace_size(t.lm_head, max_tokens);
  for (const tensor_view& w : weights) ws = std::max(ws, matmul_workspace_size(w, max_tokens));
  ws = (ws + 63) / 64 * 64;
  workspace_.reset(std::aligned_alloc(64, std::max<size_t>(ws, 64)));
  if (!workspace_) throw invalid_argument_error("drafter: cannot allocate matmul scratch");
}

void drafter_compute::linear(const tensor_view& w, const float* x, int64_t n, float* y) {
  matmul(w, x, n, y, workspace_.get(), pool_, matmul_precision::f32_activations);
}

void drafter_compute::head(const float* x, int64_t n, float* logits) {
  matmul(t_.lm_head, x, n, logits, workspace_.get(), pool_, head_precision_);
}

void drafter_compute::embed(int32_t token, float* dst) const { embedding_row(t_.embed, token, dst); }

int32_t push_draft(const propose_request& r, const float* logits, int64_t n_vocab, bool sampled, float confidence,
                   draft_sampler_slot& s, draft_batch& out) {
  const std::span<const float> row(logits, static_cast<size_t>(n_vocab));
  if (!sampled || r.sampling == nullptr || r.sampling->temperature == 0.0f) {
    const int32_t x = argmax_index(row);
    out.push_one_hot(r.slot, x, confidence);
    return x;
  }
  if (!s.smp) s.smp.emplace(n_vocab, *r.sampling);
  const std::span<float> pd = out.next_dense_row(r.slot);
  s.smp->distribution(logits, pd.data());
  const int32_t k = out.length(r.slot);
  const int32_t x = sample_index(pd, r.rng.uniform(r.context.size() + static_cast<size_t>(k), rng_purpose::draft));
  out.push_dense(r.slot, x, confidence);
  return x;
}

bool check_commit_features(const target_features& f, int32_t pos0, int32_t known, const drafter_config& c,
                           int32_t max_ctx, const char* who, bool device_ok) {
  if (f.empty()) return false;
  const std::string w(who);
  if (f.data == nullptr && !device_ok)
    throw invalid_argument_error(w + ": features are in device memory only, and this drafter reads them on the host");
  if (f.n_layers != static_cast<int32_t>(c.target_layers.size()) || f.n_embd != c.target_n_embd)
    throw invalid_argument_error(w + ": features of " + std::to_string(f.n_layers) + " layers x " +
                                 std::to_string(f.n_embd) + ", expected " + std::to_string(c.target_layers.size()) +
                                 " x " + std::to_string(c.target_n_embd));
  if (pos0 > known)
    throw invalid_argument_error(w + ": features for position " + std::to_string(pos0) + " but only positions < " +
                                 std::to_string(known) + " are known (a gap)");
  if (pos0 + f.n_rows > max_ctx)
    throw invalid_argument_error(w + ": context of " + std::to_string(pos0 + f.n_rows) +
                                 " positions exceeds max_ctx = " + std::to_string(max_ctx));
  return true;
}

void gather_feature_row(const target_features& f, int32_t i, float* dst) {
  for (int32_t l = 0; l < f.n_layers; ++l) {
    const float* src = f.row(l, i);
    std::copy(src, src + f.n_embd, dst + static_cast<int64_t>(l) * f.n_embd);
  }
}

}  // namespace dspark

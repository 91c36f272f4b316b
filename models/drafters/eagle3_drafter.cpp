// eagle3_drafter: fused features per position, a causal draft KV, chain drafting.
#include "models/drafters/eagle3_drafter.h"

#include <algorithm>
#include <string>

#include "common/error.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/ops.h"

namespace dspark {

struct eagle3_drafter::slot_state {
  bool open = false;
  int32_t n_feat = 0;        // fused[t] known for t < n_feat
  int32_t built = 0;         // K/V rows from target features for t < built
  std::vector<float> fused;  // [max_ctx][d] f_t = fc . F_t
  std::vector<float> k, v;   // [max_ctx + block_size][kv_dim]; chain rows follow `built`
  draft_sampler_slot smp;
};

enum { kWq = 0, kWk, kWv, kWo, kGate, kUp, kDown, kFc };

eagle3_drafter::eagle3_drafter(drafter_config c, drafter_weights w, const drafter_target_head& target,
                               const drafter_runtime_params& p)
    : c_(std::move(c)), w_(std::move(w)), p_(p) {
  if (c_.block_drafter())
    throw invalid_argument_error(std::string("eagle3_drafter: kind ") + drafter_kind_name(c_.kind) +
                                 " is not eagle3 or mtp1");
  check_drafter_setup(c_, target, p, "eagle3_drafter");
  const drafter_layer_weights& L = w_.layers[0];
  for (const host_tensor* t : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down, static_cast<const host_tensor*>(&w_.fc)})
    views_.push_back(t->view());
  cp_ = std::make_unique<drafter_compute>(target, p, chunk_, views_);
  caps_.name = drafter_kind_name(c_.kind);
  caps_.dist_kind = p.sampled ? draft_dist_kind::dense : draft_dist_kind::one_hot;
  caps_.has_confidence = false;
  caps_.capture_layers = c_.target_layers;
  inv_freq_ = rope_inv_freqs(c_.head_dim, static_cast<float>(c_.rope_theta), c_.rope_scaling);
  const int64_t d = c_.n_embd, n = chunk_, V = c_.target_n_vocab;
  feat_.resize(static_cast<size_t>(n * c_.feature_width()));
  u_.resize(static_cast<size_t>(n * 2 * d));
  tmp_.resize(static_cast<size_t>(d));
  q_.resize(static_cast<size_t>(c_.q_dim()));
  k_.resize(static_cast<size_t>(n * c_.kv_dim()));
  v_.resize(static_cast<size_t>(n * c_.kv_dim()));
  attn_.resize(static_cast<size_t>(c_.q_dim()));
  h_.resize(static_cast<size_t>(d));
  hn_.resize(static_cast<size_t>(d));
  gate_.resize(static_cast<size_t>(c_.n_ff));
  up_.resize(static_cast<size_t>(c_.n_ff));
  logits_.resize(static_cast<size_t>(V));
  fchain_.resize(static_cast<size_t>(d));
  rec_logits_.resize(static_cast<size_t>(c_.block_size * V));
  slots_.resize(static_cast<size_t>(p.max_slots));
  for (auto& s : slots_) s = std::make_unique<slot_state>();
}

eagle3_drafter::~eagle3_drafter() = default;

eagle3_drafter::slot_state& eagle3_drafter::open_slot(int32_t slot) {
  if (slot < 0 || slot >= p_.max_slots || !slots_[static_cast<size_t>(slot)]->open)
    throw invalid_argument_error("eagle3_drafter: slot " + std::to_string(slot) + " is not open");
  return *slots_[static_cast<size_t>(slot)];
}

void eagle3_drafter::begin(int32_t slot, std::span<const int32_t>) {
  if (slot < 0 || slot >= p_.max_slots)
    throw invalid_argument_error("eagle3_drafter: slot " + std::to_string(slot) + " out of range [0, " +
                                 std::to_string(p_.max_slots) + ")");
  slot_state& s = *slots_[static_cast<size_t>(slot)];
  const size_t rows = static_cast<size_t>(p_.max_ctx + c_.block_size);
  if (s.k.size() != rows * static_cast<size_t>(c_.kv_dim())) {  // first request of the slot
    s.fused.assign(static_cast<size_t>(p_.max_ctx) * static_cast<size_t>(c_.n_embd), 0.0f);
    s.k.assign(rows * static_cast<size_t>(c_.kv_dim()), 0.0f);
    s.v.assign(rows * static_cast<size_t>(c_.kv_dim()), 0.0f);
  }
  s.open = true;
  s.n_feat = 0;
  s.built = 0;
  s.smp.smp.reset();
}

void eagle3_drafter::end(int32_t slot) {
  slot_state& s = open_slot(slot);
  s.open = false;
  s.n_feat = s.built = 0;
  s.smp.smp.reset();
}

void eagle3_drafter::rollback(int32_t slot, int32_t n_context) {
  slot_state& s = open_slot(slot);
  s.n_feat = std::max(0, std::min(s.n_feat, n_context));
  s.built = std::max(0, std::min(s.built, n_context - 1));  // row t needs token t + 1
}

void eagle3_drafter::on_commit(int32_t slot, const commit_info& c) {
  slot_state& s = open_slot(slot);
  const target_features& f = c.features;
  const int32_t pos0 = c.features_pos0;
  if (!check_commit_features(f, pos0, s.n_feat, c_, p_.max_ctx, "eagle3_drafter")) return;
  const int64_t mw = c_.feature_width(), d = c_.n_embd;
  for (int32_t i0 = 0; i0 < f.n_rows; i0 += static_cast<int32_t>(chunk_)) {
    const int64_t n = std::min<int64_t>(chunk_, f.n_rows - i0);
    for (int64_t i = 0; i < n; ++i) gather_feature_row(f, i0 + static_cast<int32_t>(i), feat_.data() + i * mw);
    cp_->linear(views_[kFc], feat_.data(), n, s.fused.data() + (pos0 + i0) * d);
  }
  s.n_feat = pos0 + f.n_rows;
  s.built = std::min(s.built, pos0);  // rows at pos0.. are rebuilt from the new features
}

void eagle3_drafter::build_rows(slot_state& s, const float* f, std::span<const int32_t> next_tokens, int32_t t0,
                                int64_t n, bool last_out) {
  const drafter_layer_weights& L = w_.layers[0];
  const int64_t d = c_.n_embd, kvd = c_.kv_dim(), hd = c_.head_dim;
  const float eps = static_cast<float>(c_.rms_eps);
  for (int64_t i = 0; i < n; ++i) {
    float* u = u_.data() + i * 2 * d;
    cp_->embed(next_tokens[static_cast<size_t>(i)], tmp_.data());
    rms_norm(tmp_.data(), w_.input_norm.ptr(), eps, d, u);
    rms_norm(f + i * d, w_.hidden_norm.ptr(), eps, d, u + d);
  }
  cp_->linear(views_[kWk], u_.data(), n, k_.data());
  cp_->linear(views_[kWv], u_.data(), n, v_.data());
  for (int64_t i = 0; i < n; ++i) {
    float* k = k_.data() + i * kvd;
    if (c_.qk_norm)
      for (int64_t h = 0; h < c_.n_head_kv; ++h) rms_norm_inplace(k + h * hd, L.k_norm.ptr(), eps, hd);
    rope_apply(k, c_.n_head_kv, hd, t0 + i, inv_freq_.data(), rope_style::neox);
    std::copy(k, k + kvd, s.k.data() + (t0 + i) * kvd);
    std::copy(v_.data() + i * kvd, v_.data() + (i + 1) * kvd, s.v.data() + (t0 + i) * kvd);
  }
  if (!last_out) return;
  // Only the last row's output is needed: q, attention, residual from its f, MLP.
  const float* u = u_.data() + (n - 1) * 2 * d;
  const int64_t t = t0 + n - 1;
  cp_->linear(views_[kWq], u, 1, q_.data());
  if (c_.qk_norm)
    for (int64_t h = 0; h < c_.n_head; ++h) rms_norm_inplace(q_.data() + h * hd, L.q_norm.ptr(), eps, hd);
  rope_apply(q_.data(), c_.n_head, hd, t, inv_freq_.data(), rope_style::neox);
  attention_args a;
  a.q = q_.data();
  a.k = s.k.data();
  a.v = s.v.data();
  a.out = attn_.data();
  a.n_tokens = 1;
  a.p0 = t;
  a.n_heads = c_.n_head;
  a.n_kv_heads = c_.n_head_kv;
  a.head_dim = hd;
  attention(a, cp_->pool());
  cp_->linear(views_[kWo], attn_.data(), 1, hn_.data());
  const float* f_last = f + (n - 1) * d;
  for (int64_t i = 0; i < d; ++i) h_[static_cast<size_t>(i)] = f_last[i] + hn_[static_cast<size_t>(i)];
  rms_norm(h_.data(), L.ffn_norm.ptr(), eps, d, hn_.data());
  cp_->linear(views_[kGate], hn_.data(), 1, gate_.data());
  cp_->linear(views_[kUp], hn_.data(), 1, up_.data());
  silu_mul(gate_.data(), up_.data(), gate_.data(), c_.n_ff);
  cp_->linear(views_[kDown], gate_.data(), 1, hn_.data());
  add_inplace(h_.data(), hn_.data(), d);
}

void eagle3_drafter::propose(std::span<const propose_request> batch, draft_batch& out) {
  for (const propose_request& r : batch) propose_one(r, out);
}

void eagle3_drafter::propose_one(const propose_request& r, draft_batch& out) {
  slot_state& s = open_slot(r.slot);
  const int32_t pos = static_cast<int32_t>(r.context.size()) - 1;  // x0's position
  const int32_t g = std::min({r.max_drafts, c_.block_size, out.params().gamma_max - out.length(r.slot)});
  // Needs f_t for t < pos (the last pairs with x0); nothing to draft from otherwise.
  if (g <= 0 || pos < 1 || s.n_feat < pos || pos + g > p_.max_ctx + c_.block_size) return;
  s.built = std::min(s.built, pos - 1);  // the row (f_{pos-1}, x0) is always (re)built: its output gives x_1
  const int64_t d = c_.n_embd, V = c_.target_n_vocab;
  while (s.built < pos) {
    const int64_t n = std::min<int64_t>(chunk_, pos - s.built);
    const bool last = s.built + n == pos;
    build_rows(s, s.fused.data() + static_cast<int64_t>(s.built) * d,
               r.context.subspan(static_cast<size_t>(s.built) + 1, static_cast<size_t>(n)), s.built, n, last);
    s.built += static_cast<int32_t>(n);
  }
  for (int32_t j = 0; j < g; ++j) {
    if (j > 0) {
      // Step j feeds (h of the previous step, x_j) at position pos - 1 + j (a scratch row).
      const int32_t xj = static_cast<size_t>(j - 1) < forced_chain_.size() ? forced_chain_[static_cast<size_t>(j - 1)]
                                                                           : out.tokens(r.slot).back();
      std::copy(h_.begin(), h_.end(), fchain_.begin());
      build_rows(s, fchain_.data(), std::span<const int32_t>(&xj, 1), pos - 1 + j, 1, true);
    }
    rms_norm(h_.data(), w_.norm.ptr(), static_cast<float>(c_.rms_eps), d, hn_.data());
    cp_->head(hn_.data(), 1, logits_.data());
    if (record_) std::copy(logits_.begin(), logits_.end(), rec_logits_.begin() + static_cast<int64_t>(j) * V);
    push_draft(r, logits_.data(), V, p_.sampled, 1.0f, s.smp, out);
  }
}

}  // namespace dspark

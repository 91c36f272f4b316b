// dspark_drafter: persistent context K/V per slot, one block forward per round, then the
// sequential head token by token.
#include "models/drafters/dspark_drafter.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "common/error.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/ops.h"

namespace dspark {

namespace {

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

struct dspark_drafter::slot_state {
  bool open = false;
  int32_t n_rows = 0;      // context positions 0..n_rows-1 hold K/V from target features
  std::vector<float> k;    // [n_layer][max_ctx + gamma][kv_dim]; block rows follow the context
  std::vector<float> v;    // same
  draft_sampler_slot smp;
};

dspark_drafter::dspark_drafter(drafter_config c, drafter_weights w, const drafter_target_head& target,
                               const drafter_runtime_params& p)
    : c_(std::move(c)), w_(std::move(w)), p_(p) {
  if (!c_.block_drafter())
    throw invalid_argument_error(std::string("dspark_drafter: kind ") + drafter_kind_name(c_.kind) +
                                 " is not a block drafter (dspark or dflash)");
  check_drafter_setup(c_, target, p, "dspark_drafter");
  for (const drafter_layer_weights& l : w_.layers)
    for (const host_tensor* t : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down}) views_.push_back(t->view());
  views_.push_back(w_.fc.view());
  if (!w_.markov_w2.empty()) views_.push_back(w_.markov_w2.view());
  if (!w_.rnn_w.empty()) views_.push_back(w_.rnn_w.view());
  const int64_t G = c_.block_size;
  cp_ = std::make_unique<drafter_compute>(target, p, std::max<int64_t>(G, chunk_), views_);

  caps_.name = drafter_kind_name(c_.kind);
  caps_.dist_kind = p.sampled ? draft_dist_kind::dense : draft_dist_kind::one_hot;
  caps_.has_confidence = c_.confidence;
  caps_.capture_layers = c_.target_layers;

  const int64_t d = c_.n_embd, rows = std::max<int64_t>(G, chunk_), V = c_.target_n_vocab, r = c_.markov_rank;
  feat_.resize(static_cast<size_t>(chunk_ * c_.feature_width()));
  h_.resize(static_cast<size_t>(rows * d));
  a_.resize(static_cast<size_t>(rows * d));
  q_.resize(static_cast<size_t>(G * c_.q_dim()));
  k_.resize(static_cast<size_t>(rows * c_.kv_dim()));
  v_.resize(static_cast<size_t>(rows * c_.kv_dim()));
  attn_.resize(static_cast<size_t>(G * c_.q_dim()));
  gate_.resize(static_cast<size_t>(G * c_.n_ff));
  up_.resize(static_cast<size_t>(G * c_.n_ff));
  logits_.resize(static_cast<size_t>(G * V));
  mk_.resize(static_cast<size_t>(V));
  rnn_z_.resize(static_cast<size_t>(2 * r + d));
  rnn_out_.resize(static_cast<size_t>(3 * r));
  rnn_s_.resize(static_cast<size_t>(r));
  conf_in_.resize(static_cast<size_t>(d + r));
  rec_base_.resize(static_cast<size_t>(G * V));
  rec_logits_.resize(static_cast<size_t>(G * V));
  rec_conf_.resize(static_cast<size_t>(G));
  inv_freq_ = rope_inv_freqs(c_.head_dim, static_cast<float>(c_.rope_theta), c_.rope_scaling);
  slots_.resize(static_cast<size_t>(p.max_slots));
  for (auto& s : slots_) s = std::make_unique<slot_state>();
}

dspark_drafter::~dspark_drafter() = default;

dspark_drafter::slot_state& dspark_drafter::open_slot(int32_t slot) {
  if (slot < 0 || slot >= p_.max_slots || !slots_[static_cast<size_t>(slot)]->open)
    throw invalid_argument_error("dspark_drafter: slot " + std::to_string(slot) + " is not open");
  return *slots_[static_cast<size_t>(slot)];
}

int32_t dspark_drafter::context_rows(int32_t slot) const {
  if (slot < 0 || slot >= p_.max_slots) return 0;
  return slots_[static_cast<size_t>(slot)]->n_rows;
}

void dspark_drafter::begin(int32_t slot, std::span<const int32_t>) {
  if (slot < 0 || slot >= p_.max_slots)
    throw invalid_argument_error("dspark_drafter: slot " + std::to_string(slot) + " out of range [0, " +
                                 std::to_string(p_.max_slots) + ")");
  slot_state& s = *slots_[static_cast<size_t>(slot)];
  // The cache is allocated on the slot's first request and kept for the next ones.
  const size_t n = static_cast<size_t>(c_.n_layer) * static_cast<size_t>(p_.max_ctx + c_.block_size) *
                   static_cast<size_t>(c_.kv_dim());
  if (s.k.size() != n) {
    s.k.assign(n, 0.0f);
    s.v.assign(n, 0.0f);
  }
  s.open = true;
  s.n_rows = 0;
  s.smp.smp.reset();
}

void dspark_drafter::end(int32_t slot) {
  slot_state& s = open_slot(slot);
  s.open = false;
  s.n_rows = 0;
  s.smp.smp.reset();
}

void dspark_drafter::rollback(int32_t slot, int32_t n_context) {
  slot_state& s = open_slot(slot);
  s.n_rows = std::max(0, std::min(s.n_rows, n_context));
}

void dspark_drafter::on_commit(int32_t slot, const commit_info& c) {
  slot_state& s = open_slot(slot);
  if (!check_commit_features(c.features, c.features_pos0, s.n_rows, c_, p_.max_ctx, "dspark_drafter")) return;
  append_context(s, c.features, c.features_pos0);
}

void dspark_drafter::append_context(slot_state& s, const target_features& f, int32_t pos0) {
  const int64_t d = c_.n_embd, kvd = c_.kv_dim(), hd = c_.head_dim, cap = p_.max_ctx + c_.block_size;
  const int64_t mw = c_.feature_width();
  const float eps = static_cast<float>(c_.rms_eps);
  const std::vector<float>& inv = inv_freq_;
  for (int32_t i0 = 0; i0 < f.n_rows; i0 += static_cast<int32_t>(chunk_)) {
    const int64_t n = std::min<int64_t>(chunk_, f.n_rows - i0);
    for (int64_t i = 0; i < n; ++i) gather_feature_row(f, i0 + static_cast<int32_t>(i), feat_.data() + i * mw);
    // c_t = RMSNorm(fc . F_t; hidden_norm), shared by every layer.
    cp_->linear(views_[c_.n_layer * 7], feat_.data(), n, a_.data());
    for (int64_t i = 0; i < n; ++i) rms_norm_inplace(a_.data() + i * d, w_.hidden_norm.ptr(), eps, d);
    for (int64_t il = 0; il < c_.n_layer; ++il) {
      const drafter_layer_weights& L = w_.layers[static_cast<size_t>(il)];
      cp_->linear(views_[il * 7 + 1], a_.data(), n, k_.data());
      cp_->linear(views_[il * 7 + 2], a_.data(), n, v_.data());
      for (int64_t i = 0; i < n; ++i) {
        float* k = k_.data() + i * kvd;
        if (c_.qk_norm)
          for (int64_t h = 0; h < c_.n_head_kv; ++h) rms_norm_inplace(k + h * hd, L.k_norm.ptr(), eps, hd);
        const int64_t pos = pos0 + i0 + i;
        rope_apply(k, c_.n_head_kv, hd, pos, inv.data(), rope_style::neox);
        std::copy(k, k + kvd, s.k.data() + (il * cap + pos) * kvd);
        std::copy(v_.data() + i * kvd, v_.data() + (i + 1) * kvd, s.v.data() + (il * cap + pos) * kvd);
      }
    }
  }
  s.n_rows = pos0 + f.n_rows;
}

void dspark_drafter::block_forward(slot_state& s, int32_t pos, int32_t x0) {
  const int64_t G = c_.block_size, d = c_.n_embd, qd = c_.q_dim(), kvd = c_.kv_dim(), hd = c_.head_dim;
  const int64_t cap = p_.max_ctx + G, F = c_.n_ff;
  const float eps = static_cast<float>(c_.rms_eps);
  const std::vector<float>& inv = inv_freq_;
  for (int64_t j = 0; j < G; ++j) cp_->embed(j == 0 ? x0 : c_.mask_token_id, h_.data() + j * d);
  for (int64_t il = 0; il < c_.n_layer; ++il) {
    const drafter_layer_weights& L = w_.layers[static_cast<size_t>(il)];
    for (int64_t j = 0; j < G; ++j) rms_norm(h_.data() + j * d, L.attn_norm.ptr(), eps, d, a_.data() + j * d);
    cp_->linear(views_[il * 7 + 0], a_.data(), G, q_.data());
    cp_->linear(views_[il * 7 + 1], a_.data(), G, k_.data());
    cp_->linear(views_[il * 7 + 2], a_.data(), G, v_.data());
    for (int64_t j = 0; j < G; ++j) {
      float* q = q_.data() + j * qd;
      float* k = k_.data() + j * kvd;
      if (c_.qk_norm) {
        for (int64_t h = 0; h < c_.n_head; ++h) rms_norm_inplace(q + h * hd, L.q_norm.ptr(), eps, hd);
        for (int64_t h = 0; h < c_.n_head_kv; ++h) rms_norm_inplace(k + h * hd, L.k_norm.ptr(), eps, hd);
      }
      rope_apply(q, c_.n_head, hd, pos + j, inv.data(), rope_style::neox);
      rope_apply(k, c_.n_head_kv, hd, pos + j, inv.data(), rope_style::neox);
      // Block rows sit right after the context rows: scratch, overwritten next round.
      std::copy(k, k + kvd, s.k.data() + (il * cap + pos + j) * kvd);
      std::copy(v_.data() + j * kvd, v_.data() + (j + 1) * kvd, s.v.data() + (il * cap + pos + j) * kvd);
    }
    // No mask: every block query sees all context rows and all G block rows, i.e. the causal
    // kernel run for one query placed at the last block position.
    for (int64_t j = 0; j < G; ++j) {
      attention_args a;
      a.q = q_.data() + j * qd;
      a.k = s.k.data() + il * cap * kvd;
      a.v = s.v.data() + il * cap * kvd;
      a.out = attn_.data() + j * qd;
      a.n_tokens = 1;
      a.p0 = pos + G - 1;
      a.n_heads = c_.n_head;
      a.n_kv_heads = c_.n_head_kv;
      a.head_dim = hd;
      attention(a, cp_->pool());
    }
    cp_->linear(views_[il * 7 + 3], attn_.data(), G, a_.data());
    add_inplace(h_.data(), a_.data(), G * d);
    for (int64_t j = 0; j < G; ++j) rms_norm(h_.data() + j * d, L.ffn_norm.ptr(), eps, d, a_.data() + j * d);
    cp_->linear(views_[il * 7 + 4], a_.data(), G, gate_.data());
    cp_->linear(views_[il * 7 + 5], a_.data(), G, up_.data());
    silu_mul(gate_.data(), up_.data(), gate_.data(), G * F);
    cp_->linear(views_[il * 7 + 6], gate_.data(), G, a_.data());
    add_inplace(h_.data(), a_.data(), G * d);
  }
  for (int64_t j = 0; j < G; ++j) rms_norm_inplace(h_.data() + j * d, w_.norm.ptr(), eps, d);
}

void dspark_drafter::propose(std::span<const propose_request> batch, draft_batch& out) {
  for (const propose_request& r : batch) propose_one(r, out);
}

void dspark_drafter::propose_one(const propose_request& r, draft_batch& out) {
  slot_state& s = open_slot(r.slot);
  if (r.context.empty()) return;
  const int32_t pos = static_cast<int32_t>(r.context.size()) - 1;  // x0's position
  const int32_t G = c_.block_size;
  const int32_t g = std::min({r.max_drafts, G, out.params().gamma_max - out.length(r.slot)});
  // Drafts need every context row 0..pos-1; rows past pos (never expected) are dropped.
  if (g <= 0 || s.n_rows < pos || pos > p_.max_ctx) return;
  s.n_rows = pos;
  block_forward(s, pos, r.context.back());
  const int64_t d = c_.n_embd, V = c_.target_n_vocab, rk = c_.markov_rank;
  cp_->head(h_.data(), g, logits_.data());
  if (record_) std::copy(logits_.begin(), logits_.begin() + g * V, rec_base_.begin());
  std::fill(rnn_s_.begin(), rnn_s_.end(), 0.0f);
  int32_t prev = r.context.back();
  for (int32_t k = 0; k < g; ++k) {
    if (k > 0 && static_cast<size_t>(k) < forced_prev_.size()) prev = forced_prev_[static_cast<size_t>(k)];
    float* L = logits_.data() + k * V;
    const float* hk = h_.data() + k * d;
    const float* e = c_.markov != markov_kind::none ? w_.markov_w1.ptr() + static_cast<int64_t>(prev) * rk : nullptr;
    if (c_.markov == markov_kind::vanilla) {
      cp_->linear(views_.back(), e, 1, mk_.data());
      add_inplace(L, mk_.data(), V);
    } else if (c_.markov == markov_kind::rnn) {
      // z = [s_{k-1}; w1[prev]; h_k], [g|c|o] = rnn . z + b, s_k = sig(g) s + (1 - sig(g)) tanh(c).
      std::copy(rnn_s_.begin(), rnn_s_.end(), rnn_z_.begin());
      std::copy(e, e + rk, rnn_z_.begin() + rk);
      std::copy(hk, hk + d, rnn_z_.begin() + 2 * rk);
      cp_->linear(views_.back(), rnn_z_.data(), 1, rnn_out_.data());
      add_inplace(rnn_out_.data(), w_.rnn_b.ptr(), 3 * rk);
      for (int64_t i = 0; i < rk; ++i) {
        const float gs = sigmoid(rnn_out_[static_cast<size_t>(i)]);
        rnn_s_[static_cast<size_t>(i)] = gs * rnn_s_[static_cast<size_t>(i)] + (1.0f - gs) * std::tanh(rnn_out_[static_cast<size_t>(rk + i)]);
        rnn_out_[static_cast<size_t>(i)] = std::tanh(rnn_out_[static_cast<size_t>(2 * rk + i)]);  // tanh(o), reusing the front
      }
      cp_->linear(views_[views_.size() - 2], rnn_out_.data(), 1, mk_.data());
      add_inplace(L, mk_.data(), V);
    }
    float conf = 1.0f;
    if (c_.confidence) {
      // z_k = conf . [h_k; w1[prev_k]] + b: a function of x_<k only.
      double z = w_.conf_b.data[0];
      const float* cw = w_.conf_w.ptr();
      for (int64_t i = 0; i < d; ++i) z += static_cast<double>(cw[i]) * hk[i];
      for (int64_t i = 0; e != nullptr && i < rk; ++i) z += static_cast<double>(cw[d + i]) * e[i];
      if (record_) rec_conf_[static_cast<size_t>(k)] = static_cast<float>(z);
      conf = sigmoid(static_cast<float>(z) / c_.confidence_temperatures[static_cast<size_t>(k)]);
    }
    if (record_) std::copy(L, L + V, rec_logits_.begin() + k * V);
    prev = push_draft(r, L, V, p_.sampled, conf, s.smp, out);
  }
}

}  // namespace dspark

// layerskip_drafter: the target's first K layers + final norm + head as the draft model.
#include "models/drafters/layerskip_drafter.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "common/error.h"
#include "engine/spec/verify.h"

namespace dspark {

layerskip_drafter::layerskip_drafter(const model_config& c, const llama_weights& w,
                                     const layerskip_drafter_params& p,
                                     const draft_backend_factory& make_backend)
    : p_(p), cfg_(c), w_() {
  if (p.n_layers < 1 || p.n_layers > c.n_layer)
    throw invalid_argument_error("layerskip_drafter: K = " + std::to_string(p.n_layers) +
                                 " layers out of range [1, " + std::to_string(c.n_layer) + "]");
  if (p.max_slots < 1)
    throw invalid_argument_error("layerskip_drafter: max_slots " + std::to_string(p.max_slots) + " must be >= 1");
  if (!(p.stop_below >= 0.0f && p.stop_below <= 1.0f))
    throw invalid_argument_error("layerskip_drafter: stop_below " + std::to_string(p.stop_below) +
                                 " out of range [0, 1]");
  cfg_.n_layer = p.n_layers;
  w_.token_embd = w.token_embd;
  w_.output_norm = w.output_norm;
  w_.output = w.output;
  w_.layers.assign(w.layers.begin(), w.layers.begin() + p.n_layers);
  if (p.shared_target) {
    if (!p.shared_target->supports_forward_prefix())
      throw invalid_argument_error("layerskip_drafter: the target backend cannot run a layer prefix; use an own cache");
  } else {
    be_ = make_backend(cfg_, w_);
  }
  const backend_limits& lim = draft_backend().limits();
  if (!p.shared_target && lim.n_seq_max < p.max_slots)
    throw invalid_argument_error("layerskip_drafter: the draft backend opens " + std::to_string(lim.n_seq_max) +
                                 " sequences, fewer than max_slots " + std::to_string(p.max_slots));
  caps_.name = "layerskip:" + std::to_string(p.n_layers);
  caps_.dist_kind = p.sampled ? draft_dist_kind::dense : draft_dist_kind::one_hot;
  caps_.has_confidence = true;
  caps_.shares_target = p.shared_target != nullptr;
  slots_.resize(static_cast<size_t>(p.max_slots));
  act_.resize(static_cast<size_t>(p.max_slots));
  feed_tokens_.resize(static_cast<size_t>(p.max_slots));
  feed_seq_.resize(static_cast<size_t>(p.max_slots));
  seqs_.resize(static_cast<size_t>(p.max_slots));
  tok_buf_.resize(static_cast<size_t>(lim.max_tokens_per_step));
  restore_.reserve(static_cast<size_t>(p.max_slots));
}

forward_output layerskip_drafter::run(const forward_batch& fb) {
  return p_.shared_target ? p_.shared_target->forward_prefix(fb, p_.n_layers) : be_->forward(fb);
}

layerskip_drafter::~layerskip_drafter() {
  if (!p_.shared_target)
    for (slot_state& s : slots_)
      if (s.open && s.seq >= 0) be_->free_sequence(s.seq);
}

layerskip_drafter::slot_state& layerskip_drafter::open_slot(int32_t slot) {
  if (slot < 0 || slot >= p_.max_slots || !slots_[static_cast<size_t>(slot)].open)
    throw invalid_argument_error("layerskip_drafter: slot " + std::to_string(slot) + " is not open");
  return slots_[static_cast<size_t>(slot)];
}

void layerskip_drafter::begin(int32_t slot, std::span<const int32_t> prompt) {
  if (slot < 0 || slot >= p_.max_slots)
    throw invalid_argument_error("layerskip_drafter: slot " + std::to_string(slot) + " out of range [0, " +
                                 std::to_string(p_.max_slots) + ")");
  slot_state& s = slots_[static_cast<size_t>(slot)];
  if (s.open) end(slot);
  s = slot_state{};
  s.open = true;
  if (!p_.shared_target) {  // shared: the request's target sequence arrives with each propose
    const std::optional<int32_t> seq = be_->open_sequence();
    if (!seq) throw invalid_argument_error("layerskip_drafter: no free sequence in the draft backend");
    s.seq = *seq;
  }
  s.ctx_len = static_cast<int32_t>(prompt.size());
}

template <class Pick>
void layerskip_drafter::feed(size_t n_items, Pick&& pick) {
  const backend_limits& lim = draft_backend().limits();
  const int32_t cap = std::min(lim.max_tokens_per_step, std::max<int32_t>(1, lim.n_ctx));
  size_t begin = 0;
  while (begin < n_items) {
    // Pack items while they fit; an item longer than the limit was pre-fed in chunks.
    size_t end = begin;
    int32_t n_tok = 0;
    while (end < n_items && n_tok + static_cast<int32_t>(feed_tokens_[end].size()) <= cap &&
           static_cast<int32_t>(end - begin) < lim.max_logit_rows) {
      const std::span<const int32_t> t = feed_tokens_[end];
      std::copy(t.begin(), t.end(), tok_buf_.begin() + n_tok);
      seqs_[end - begin] = batch_sequence{feed_seq_[end], static_cast<int32_t>(t.size()), 1};
      n_tok += static_cast<int32_t>(t.size());
      ++end;
    }
    forward_batch fb;
    fb.tokens = {tok_buf_.data(), static_cast<size_t>(n_tok)};
    fb.seqs = {seqs_.data(), end - begin};
    const forward_output o = run(fb);
    if (o.status != forward_status::ok)
      throw invalid_argument_error("layerskip_drafter: the draft KV cache is full");
    for (size_t i = begin; i < end; ++i) pick(i, o.logits + static_cast<int64_t>(i - begin) * lim.n_vocab);
    begin = end;
  }
}

void layerskip_drafter::pick(const propose_request& r, const float* logits, draft_batch& out) {
  slot_state& s = slots_[static_cast<size_t>(r.slot)];
  const int64_t nv = draft_backend().limits().n_vocab;
  const std::span<const float> row(logits, static_cast<size_t>(nv));
  const bool sample = p_.sampled && r.sampling && r.sampling->temperature > 0.0f;
  if (!sample) {
    // Greedy: confidence = softmax probability of the argmax (a function of x_<k only).
    const int32_t x = argmax_index(row);
    double z = 0.0;
    for (float v : row) z += std::exp(static_cast<double>(v - row[static_cast<size_t>(x)]));
    const float c = static_cast<float>(1.0 / z);
    out.push_one_hot(r.slot, x, c);
    s.survival *= c;
    if (s.survival < p_.stop_below) s.want = out.length(r.slot);  // no further drafts
    return;
  }
  if (!s.smp) s.smp.emplace(nv, *r.sampling);
  const std::span<float> pd = out.next_dense_row(r.slot);
  s.smp->distribution(logits, pd.data());
  float top = 0.0f;
  for (float v : pd) top = std::max(top, v);
  const int32_t k = out.length(r.slot);
  const int32_t x = sample_index(pd, r.rng.uniform(r.context.size() + static_cast<size_t>(k), rng_purpose::draft));
  const float c = std::min(1.0f, top);
  out.push_dense(r.slot, x, c);
  s.survival *= c;
  if (s.survival < p_.stop_below) s.want = out.length(r.slot);  // no further drafts
}

void layerskip_drafter::propose(std::span<const propose_request> batch, draft_batch& out) {
  backend& be = draft_backend();
  const backend_limits& lim = be.limits();
  size_t n = 0;
  restore_.clear();
  for (const propose_request& r : batch) {
    slot_state& s = open_slot(r.slot);
    if (p_.shared_target) {
      if (r.target_seq < 0) throw invalid_argument_error("layerskip_drafter: a shared cache needs the target sequence");
      s.seq = r.target_seq;
    }
    const int32_t len = static_cast<int32_t>(r.context.size());
    s.ctx_len = len;
    s.survival = 1.0;
    s.want = std::min(r.max_drafts, out.params().gamma_max - out.length(r.slot));
    s.want = std::min(s.want, lim.n_ctx - len);  // the draft cache must hold every fed draft
    if (s.want <= 0) continue;
    int32_t kv = be.sequence_length(s.seq);
    if (kv >= len) {  // never: x0 is always unfed; keep the invariant anyway
      be.truncate(s.seq, len - 1);
      kv = len - 1;
    }
    if (p_.shared_target) restore_.emplace_back(s.seq, kv);  // the committed KV, all layers
    // Long catch-up (the prompt): feed all but the last chunk on its own.
    while (len - kv > lim.max_tokens_per_step) {
      const int32_t n_tok = lim.max_tokens_per_step;
      const batch_sequence seq{s.seq, n_tok, 0};
      forward_batch fb;
      fb.tokens = r.context.subspan(static_cast<size_t>(kv), static_cast<size_t>(n_tok));
      fb.seqs = std::span<const batch_sequence>(&seq, 1);
      if (run(fb).status != forward_status::ok)
        throw invalid_argument_error("layerskip_drafter: the draft KV cache is full");
      kv += n_tok;
    }
    act_[n] = &r;
    feed_tokens_[n] = r.context.subspan(static_cast<size_t>(kv));
    feed_seq_[n] = s.seq;
    ++n;
  }
  // Draft 1 from the catch-up forward, then one batched forward per further draft.
  feed(n, [&](size_t i, const float* logits) { pick(*act_[i], logits, out); });
  for (;;) {
    size_t m = 0;
    for (size_t i = 0; i < n; ++i) {
      const propose_request& r = *act_[i];
      if (out.length(r.slot) >= slots_[static_cast<size_t>(r.slot)].want) continue;
      act_[m] = &r;
      feed_tokens_[m] = out.tokens(r.slot).last(1);
      feed_seq_[m] = slots_[static_cast<size_t>(r.slot)].seq;
      ++m;
    }
    if (m == 0) break;
    n = m;
    feed(n, [&](size_t i, const float* logits) { pick(*act_[i], logits, out); });
  }
  // Shared cache: the target's sequences go back to their committed length (their layers >= K
  // at the drafted positions were never written; the verify forward rewrites every layer).
  for (const auto& [seq, len] : restore_) be.truncate(seq, len);
}

void layerskip_drafter::on_commit(int32_t slot, const commit_info& c) {
  slot_state& s = open_slot(slot);
  if (p_.shared_target) {  // the target's KV is the decoder's to roll back
    s.ctx_len += static_cast<int32_t>(c.tokens.size());
    return;
  }
  // The draft cache may hold x0 and fed drafts; keep only what the target accepted.
  const int32_t keep = s.ctx_len + c.n_accepted;
  if (be_->sequence_length(s.seq) > keep) be_->truncate(s.seq, keep);
  s.ctx_len += static_cast<int32_t>(c.tokens.size());
}

void layerskip_drafter::rollback(int32_t slot, int32_t n_context) {
  slot_state& s = open_slot(slot);
  if (p_.shared_target) {
    s.ctx_len = n_context;
    return;
  }
  if (be_->sequence_length(s.seq) > n_context) be_->truncate(s.seq, n_context);
  s.ctx_len = n_context;
}

void layerskip_drafter::end(int32_t slot) {
  slot_state& s = open_slot(slot);
  if (!p_.shared_target) be_->free_sequence(s.seq);
  s = slot_state{};
}

}  // namespace dspark

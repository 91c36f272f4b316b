// drafter_core: see drafter_core.h.
#include "actors/drafter_core.h"

#include <cstdio>

#include "messages/wire.h"

namespace dspark::actors {

namespace {

draft_batch_params batch_params(const drafter& d, int32_t max_slots, int32_t gamma_max, int64_t n_vocab) {
  draft_batch_params p;
  p.max_slots = max_slots;
  p.gamma_max = gamma_max;
  p.n_vocab = n_vocab;
  p.kind = d.caps().dist_kind;
  p.max_sparse = d.caps().max_sparse;
  return p;
}

}  // namespace

drafter_core::drafter_core(std::unique_ptr<drafter> d, int32_t max_slots, int32_t gamma_max, int64_t n_vocab,
                           send_fn send)
    : d_(std::move(d)),
      max_slots_(max_slots),
      gamma_max_(gamma_max),
      send_(std::move(send)),
      ctx_(static_cast<size_t>(max_slots)),
      open_(static_cast<size_t>(max_slots), false),
      out_(batch_params(*d_, max_slots, gamma_max, n_vocab)),
      params_(static_cast<size_t>(max_slots)) {
  reqs_.reserve(static_cast<size_t>(max_slots));
}

std::string drafter_core::hello() const {
  msg::drafter_hello h;
  h.name = d_->caps().name;
  h.dist_kind = d_->caps().dist_kind;
  h.max_sparse = d_->caps().max_sparse;
  h.capture_layers = d_->caps().capture_layers;
  std::string out;
  msg::encode(h, out);
  return out;
}

void drafter_core::reset() {
  for (int32_t s = 0; s < max_slots_; ++s) {
    if (open_[static_cast<size_t>(s)]) d_->end(s);
    open_[static_cast<size_t>(s)] = false;
    ctx_[static_cast<size_t>(s)].clear();
  }
}

void drafter_core::handle(std::string_view frame) {
  msg::drafter_message m;
  try {
    m = msg::decode_drafter_message(frame);
  } catch (const msg::wire_error& e) {
    std::fprintf(stderr, "drafter: malformed frame from the verifier: %s\n", e.what());
    return;
  }
  const auto valid = [this](int32_t slot) { return slot >= 0 && slot < max_slots_; };
  try {
    if (auto* rs = std::get_if<msg::drafter_reset>(&m)) {
      reset();
      shm_ = shared_segment();
      if (!rs->shm_name.empty()) {
        try {
          shm_ = shared_segment::open_readonly(rs->shm_name, static_cast<size_t>(rs->shm_bytes));
        } catch (const std::exception& e) {
          std::fprintf(stderr, "drafter: cannot map the feature segment (%s); shared features are ignored\n", e.what());
        }
      }
    } else if (auto* b = std::get_if<msg::drafter_begin>(&m)) {
      if (!valid(b->slot)) return;
      const auto s = static_cast<size_t>(b->slot);
      if (open_[s]) d_->end(b->slot);
      ctx_[s] = std::move(b->prompt);
      open_[s] = true;
      d_->begin(b->slot, ctx_[s]);
    } else if (auto* c = std::get_if<msg::drafter_commit>(&m)) {
      if (!valid(c->slot) || !open_[static_cast<size_t>(c->slot)]) return;
      auto& ctx = ctx_[static_cast<size_t>(c->slot)];
      ctx.insert(ctx.end(), c->tokens.begin(), c->tokens.end());
      commit_info ci;
      ci.tokens = c->tokens;
      ci.n_accepted = c->n_accepted;
      ci.n_proposed = c->n_proposed;
      const size_t bytes = static_cast<size_t>(c->n_layers) * static_cast<size_t>(c->n_rows) *
                           static_cast<size_t>(c->n_embd) * sizeof(float);
      const float* data = c->features.data();
      if (c->features_shm) {
        // In the shared segment: checked against its size, read in place (no copy).
        const bool inside = shm_.valid() && c->shm_offset % alignof(float) == 0 && c->shm_offset <= shm_.size() &&
                            bytes <= shm_.size() - c->shm_offset;
        data = inside ? reinterpret_cast<const float*>(shm_.data() + c->shm_offset) : nullptr;
      }
      if (c->n_layers > 0 && data) {
        ci.features.data = data;
        ci.features.n_layers = c->n_layers;
        ci.features.n_rows = c->n_rows;
        ci.features.row0 = 0;
        ci.features.n_embd = c->n_embd;
        ci.features.layer_stride = static_cast<int64_t>(c->n_rows) * c->n_embd;
      }
      d_->on_commit(c->slot, ci);
    } else if (auto* r = std::get_if<msg::drafter_rollback>(&m)) {
      if (!valid(r->slot) || !open_[static_cast<size_t>(r->slot)]) return;
      auto& ctx = ctx_[static_cast<size_t>(r->slot)];
      if (r->n_context >= 0 && r->n_context < static_cast<int32_t>(ctx.size())) ctx.resize(static_cast<size_t>(r->n_context));
      d_->rollback(r->slot, r->n_context);
    } else if (auto* e = std::get_if<msg::drafter_end>(&m)) {
      if (!valid(e->slot) || !open_[static_cast<size_t>(e->slot)]) return;
      d_->end(e->slot);
      open_[static_cast<size_t>(e->slot)] = false;
      ctx_[static_cast<size_t>(e->slot)].clear();
    } else if (auto* p = std::get_if<msg::drafter_propose>(&m)) {
      propose(*p);
    }
  } catch (const std::exception& ex) {
    std::fprintf(stderr, "drafter: %s\n", ex.what());
    if (auto* p = std::get_if<msg::drafter_propose>(&m)) {
      reply_.seq = p->seq;
      reply_.slots.clear();
      msg::encode(reply_, buf_);
      send_(buf_);
    }
  }
}

void drafter_core::propose(const msg::drafter_propose& p) {
  reqs_.clear();
  out_.clear();
  for (const msg::propose_item& it : p.items) {
    if (it.slot < 0 || it.slot >= max_slots_) continue;
    const auto s = static_cast<size_t>(it.slot);
    if (!open_[s] || static_cast<int32_t>(ctx_[s].size()) != it.context_len || ctx_[s].empty()) continue;
    sampling_params& sp = params_[s];
    sp.temperature = it.temperature;
    sp.top_k = it.top_k;
    sp.top_p = it.top_p;
    sp.min_p = it.min_p;
    sp.seed = it.rng_seed;
    propose_request r;
    r.slot = it.slot;
    r.max_drafts = std::max(0, std::min(it.max_drafts, gamma_max_));
    r.context = ctx_[s];
    r.rng = rng_key{it.rng_seed, it.rng_round};
    r.sampling = &sp;
    reqs_.push_back(r);
  }
  if (!reqs_.empty()) d_->propose(reqs_, out_);
  reply_.seq = p.seq;
  reply_.slots.resize(reqs_.size());
  for (size_t i = 0; i < reqs_.size(); ++i) {
    const int32_t slot = reqs_[i].slot;
    msg::slot_drafts& sd = reply_.slots[i];
    sd.slot = slot;
    const int32_t n = out_.length(slot);
    sd.drafts.resize(static_cast<size_t>(n));
    int32_t kept = n;
    for (int32_t k = 0; k < n; ++k) {
      msg::draft_token& t = sd.drafts[static_cast<size_t>(k)];
      t.token = out_.tokens(slot)[static_cast<size_t>(k)];
      t.confidence = out_.confidences(slot)[static_cast<size_t>(k)];
      t.sparse_ids.clear();
      t.sparse_probs.clear();
      const draft_dist dd = out_.dist(slot, k);
      if (dd.kind == draft_dist_kind::sparse) {
        t.sparse_ids.assign(dd.ids.begin(), dd.ids.end());
        t.sparse_probs.assign(dd.probs.begin(), dd.probs.end());
      } else if (dd.kind == draft_dist_kind::dense) {
        // Only the support travels; a support too wide for the wire ends the chain here.
        for (size_t v = 0; v < dd.probs.size(); ++v)
          if (dd.probs[v] > 0.0f) {
            t.sparse_ids.push_back(static_cast<int32_t>(v));
            t.sparse_probs.push_back(dd.probs[v]);
          }
        if (t.sparse_ids.size() > msg::k_max_sparse) {
          kept = k;
          break;
        }
      }
    }
    sd.drafts.resize(static_cast<size_t>(kept));
  }
  msg::encode(reply_, buf_);
  send_(buf_);
}

}  // namespace dspark::actors

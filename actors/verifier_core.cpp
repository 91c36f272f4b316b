// verifier_core: see verifier_core.h.
#include "actors/verifier_core.h"

#include <algorithm>
#include <cstdio>

#include "common/error.h"
#include "actors/remote_drafter.h"
#include "engine/cpu_backend.h"
#include "messages/wire.h"

namespace dspark::actors {

namespace {

double seconds(steady_clock::duration d) { return std::chrono::duration<double>(d).count(); }

int32_t default_kv_blocks(const verifier_options& o, const backend& be) {
  if (o.kv_blocks > 0) return o.kv_blocks;
  const int32_t n_ctx = be.limits().n_ctx;
  return o.max_requests * ((n_ctx + o.kv_block_size - 1) / o.kv_block_size);
}

const char* verdict_text(queue_verdict v) {
  return v == queue_verdict::overloaded ? "the verifier's queue is full"
                                        : "the request needs more KV blocks than the server has";
}

msg::end_reason to_end_reason(const spec_result& r) {
  if (r.cancelled) return msg::end_reason::cancelled;
  switch (r.gen.finish) {
    case finish_reason::stop_id:
    case finish_reason::stop_string: return msg::end_reason::stop;
    case finish_reason::max_tokens: return msg::end_reason::length;
    case finish_reason::context_full: return msg::end_reason::context_full;
  }
  return msg::end_reason::stop;
}

}  // namespace

// A request holding a decoder slot: where its output goes and the tokens of the current step.
struct verifier_core::running {
  std::string peer;
  uint64_t key = 0;
  uint64_t id = 0;  // kv_manager key
  int32_t prompt_tokens = 0;
  steady_clock::time_point arrived, first_token, last_token;
  bool has_first = false;
  int32_t completion = 0;
  msg::token_delta delta;  // this step's tokens; capacity kept between steps
};

kv_manager_params verifier_core::kv_params(const verifier_options& opt, const backend& be, const spec_policy& policy) {
  return kv_manager_params{default_kv_blocks(opt, be), opt.kv_block_size, be.limits().n_ctx, policy.draft_budget() + 1};
}

verifier_core::verifier_core(backend& be, drafter* d, std::unique_ptr<spec_policy> policy,
                             const tokenizer* tok, std::span<const int32_t> stop_ids,
                             const verifier_options& opt, sink_fn sink, std::unique_ptr<admission_port> port)
    : be_(be),
      drafter_(d),
      opt_(opt),
      sink_(std::move(sink)),
      policy_(std::make_unique<timed_policy>(std::move(policy))),
      port_(port ? std::move(port) : std::make_unique<local_admission>(kv_params(opt, be, *policy_), opt.max_waiting)),
      dec_(be, d, *policy_, tok, stop_ids,
           spec_decoder_options{opt.max_requests, opt.prefill_chunk, opt.prefix_cache, opt.pipeline, opt.gate}) {
  slots_.resize(static_cast<size_t>(opt.max_requests));
  admitted_.reserve(static_cast<size_t>(opt.max_requests));
}

verifier_core::~verifier_core() = default;

void verifier_core::handle(const std::string& peer, std::string_view frame) {
  try {
    msg::engine_message m = msg::decode_engine_message(frame);
    if (auto* s = std::get_if<msg::submit_request>(&m)) {
      submit(peer, std::move(*s));
    } else if (auto* c = std::get_if<msg::cancel_request>(&m)) {
      cancel(peer, c->key);
    } else if (auto* q = std::get_if<msg::status_query>(&m)) {
      // The verifier's numbers now; kv_manager's once it applied every release sent before
      // (with the actors, a later answer: the request state must not be read then, or a cancel
      // handled meanwhile would show no active request beside its reservation).
      msg::status_report r = status(kv_usage{});
      r.cookie = q->cookie;
      port_->usage([this, peer, r = std::move(r)](const kv_usage& u) mutable {
        r.kv_blocks_total = u.total;
        r.kv_blocks_used = u.used;
        r.kv_blocks_shared = u.shared;
        msg::encode(r, out_);
        send(peer);
      });
    } else {
      std::fprintf(stderr, "verifier: ignoring an engine message meant for the intake\n");
    }
  } catch (const msg::wire_error& e) {
    std::fprintf(stderr, "verifier: dropping a malformed frame: %s\n", e.what());
  }
}

void verifier_core::reject(const std::string& peer, uint64_t key, msg::reject_code c, const std::string& why) {
  msg::encode(msg::request_rejected{key, c, why}, out_);
  send(peer);
}

void verifier_core::send(const std::string& peer) { sink_(peer, out_); }

void verifier_core::submit(const std::string& peer, msg::submit_request&& r) {
  try {
    validate(r.params);
  } catch (const invalid_argument_error& e) {
    return reject(peer, r.key, msg::reject_code::invalid_params, e.what());
  }
  const int32_t n_ctx = be_.limits().n_ctx;
  const int64_t n_vocab = be_.limits().n_vocab;
  if (r.prompt.empty()) return reject(peer, r.key, msg::reject_code::invalid_params, "the prompt is empty");
  if (static_cast<int64_t>(r.prompt.size()) >= n_ctx)
    return reject(peer, r.key, msg::reject_code::invalid_params,
                  "the prompt has " + std::to_string(r.prompt.size()) + " tokens; the context holds " +
                      std::to_string(n_ctx));
  for (int32_t t : r.prompt)
    if (t < 0 || t >= n_vocab)
      return reject(peer, r.key, msg::reject_code::invalid_params,
                    "prompt token " + std::to_string(t) + " is outside the vocabulary [0, " +
                        std::to_string(n_vocab) + ")");
  waiting_request w;
  w.peer = peer;
  w.id = next_id_++;
  w.req = std::move(r);
  w.arrived = steady_clock::now();
  pending_.emplace(w.id, pending{peer, w.req.key, static_cast<int32_t>(w.req.prompt.size())});
  port_->enqueue(std::move(w), [this](uint64_t id, queue_verdict v) { verdict(id, v); });
}

// The scheduler refused a request (queue full, or a worst case over the whole budget).
void verifier_core::verdict(uint64_t id, queue_verdict v) {
  if (v == queue_verdict::queued) return;
  const auto it = pending_.find(id);
  if (it == pending_.end()) return;  // cancelled meanwhile: its done went out
  const pending p = std::move(it->second);
  pending_.erase(it);
  reject(p.peer, p.key, v == queue_verdict::overloaded ? msg::reject_code::overloaded : msg::reject_code::invalid_params,
         verdict_text(v));
}

void verifier_core::cancel(const std::string& peer, uint64_t key) {
  for (auto it = pending_.begin(); it != pending_.end(); ++it) {
    if (it->second.peer != peer || it->second.key != key) continue;
    port_->remove(it->first);
    ++unblocks_;
    msg::request_done d;
    d.key = key;
    d.reason = msg::end_reason::cancelled;
    d.stats.prompt_tokens = it->second.prompt_tokens;
    pending_.erase(it);
    msg::encode(d, out_);
    return send(peer);
  }
  for (size_t i = 0; i < slots_.size(); ++i) {
    running* r = slots_[i].get();
    if (r && r->peer == peer && r->key == key) {
      dec_.cancel(static_cast<int32_t>(i));
      finish(static_cast<int32_t>(i));
      return;
    }
  }
  // Unknown: it already finished (its done is on the way) or never existed; nothing to do.
}

void verifier_core::drop_peer(const std::string& peer) {
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i] && slots_[i]->peer == peer) {
      dec_.cancel(static_cast<int32_t>(i));
      finish(static_cast<int32_t>(i));  // the done goes nowhere; the KV is what matters
    }
  }
  std::erase_if(pending_, [&](const auto& e) {
    if (e.second.peer != peer) return false;
    port_->remove(e.first);
    ++unblocks_;
    return true;
  });
}

bool verifier_core::busy() const {
  if (!pending_.empty()) return true;
  for (const auto& r : slots_)
    if (r) return true;
  return false;
}

void verifier_core::start(waiting_request&& w) {
  auto r = std::make_unique<running>();
  r->peer = std::move(w.peer);
  r->key = w.req.key;
  r->id = w.id;
  r->prompt_tokens = static_cast<int32_t>(w.req.prompt.size());
  r->arrived = w.arrived;
  r->delta.key = r->key;
  running* raw = r.get();
  int32_t slot = -1;
  try {
    slot = dec_.add(w.req.prompt, w.req.params, [raw](int32_t id, std::string_view text) {
      if (id >= 0) raw->delta.token_ids.push_back(id);
      raw->delta.text.append(text);
    });
  } catch (const std::exception& e) {
    release(w.id);
    return reject(raw->peer, raw->key, msg::reject_code::invalid_params, e.what());
  }
  slots_[static_cast<size_t>(slot)] = std::move(r);
}

int32_t verifier_core::free_slots() const {
  int32_t n = 0;
  for (const auto& r : slots_) n += r ? 0 : 1;
  return n;
}

bool verifier_core::wants_admission() const {
  if (pending_.empty() || free_slots() == 0) return false;
  // After a short admission nothing changes for the head until a release, a cancel or a
  // different credit (events during the round trip count: they may have let it in already).
  return !admitted_short_ || unblocks_ != unblocks_at_ask_ || shared_credit() != asked_.shared_credit;
}

verifier_core::admission_ask verifier_core::begin_admission() {
  asked_ = admission_ask{free_slots(), shared_credit()};
  expected_ = std::min(asked_.free_slots, static_cast<int32_t>(pending_.size()));
  unblocks_at_ask_ = unblocks_;
  return asked_;
}

void verifier_core::start_admitted(std::vector<waiting_request>& admitted) {
  admitted_short_ = static_cast<int32_t>(admitted.size()) < expected_;
  for (auto& w : admitted) {
    if (pending_.erase(w.id) == 0) {
      release(w.id);  // cancelled while its admission was under way
      continue;
    }
    start(std::move(w));
  }
}

void verifier_core::release(uint64_t id) {
  port_->release(id);
  ++unblocks_;  // blocks came back: the head may fit now
}

void verifier_core::reject_waiting(const std::string& why) {
  std::unordered_map<uint64_t, pending> gone;
  gone.swap(pending_);
  for (auto& [id, p] : gone) {
    port_->remove(id);
    reject(p.peer, p.key, msg::reject_code::internal, why);
  }
}

void verifier_core::step() {
  admitted_.clear();
  if (!port_->admit_now(free_slots(), shared_credit(), admitted_))
    throw invalid_argument_error("verifier_core::step: the admission port admits asynchronously; use the split step");
  start_admitted(admitted_);
  run_step();
}

void verifier_core::run_step() {
  bool any = false;
  for (const auto& r : slots_) any = any || r;
  if (!any) return;
  dec_.step();
  ++steps_;
  const auto now = steady_clock::now();
  for (size_t i = 0; i < slots_.size(); ++i) {
    running* r = slots_[i].get();
    if (!r) continue;
    if (!r->delta.token_ids.empty() || !r->delta.text.empty()) {
      if (!r->delta.token_ids.empty()) {
        if (!r->has_first) {
          r->has_first = true;
          r->first_token = now;
        }
        r->last_token = now;
        r->completion += static_cast<int32_t>(r->delta.token_ids.size());
      }
      msg::encode(r->delta, out_);
      send(r->peer);
      r->delta.token_ids.clear();
      r->delta.text.clear();
    }
    if (dec_.finished(static_cast<int32_t>(i))) finish(static_cast<int32_t>(i));
  }
}

// Block references the backend saves by prefix sharing, when they are in kv_manager's unit.
int32_t verifier_core::shared_credit() const {
  if (!dec_.prefix_cache() || be_.limits().kv_block_size != opt_.kv_block_size) return 0;
  return be_.prefix_stats().shared_refs;
}

void verifier_core::finish(int32_t slot) {
  std::unique_ptr<running> r = std::move(slots_[static_cast<size_t>(slot)]);
  spec_result res = dec_.take(slot);
  release(r->id);
  ++finished_;
  msg::request_done d;
  d.key = r->key;
  d.token_ids = std::move(res.gen.token_ids);
  d.text = std::move(res.gen.text);
  d.reason = to_end_reason(res);
  msg::request_stats& s = d.stats;
  s.prompt_tokens = r->prompt_tokens;
  s.completion_tokens = static_cast<int32_t>(d.token_ids.size());
  tokens_generated_ += s.completion_tokens;
  if (r->has_first) {
    s.ttft_s = seconds(r->first_token - r->arrived);
    const double decode_s = seconds(r->last_token - r->first_token);
    if (s.completion_tokens > 1) s.tpot_s = decode_s / (s.completion_tokens - 1);
    if (decode_s > 0) s.tokens_per_s = (s.completion_tokens - 1) / decode_s;
  }
  s.acceptance_length = res.metrics.acceptance_length();
  s.verify_steps = res.metrics.verify_steps();
  s.draft_tokens_proposed = res.metrics.draft_tokens_proposed();
  s.draft_tokens_accepted = res.metrics.draft_tokens_accepted();
  s.cached_tokens = res.gen.stats.cached_tokens;
  msg::encode(d, out_);
  send(r->peer);
}

msg::status_report verifier_core::status() const { return status(port_->last_usage()); }

msg::status_report verifier_core::status(const kv_usage& kv) const {
  msg::status_report s;
  for (const auto& r : slots_) s.active_requests += r ? 1 : 0;
  s.queued_requests = static_cast<int32_t>(pending_.size());
  s.kv_blocks_total = kv.total;
  s.kv_blocks_used = kv.used;
  s.kv_blocks_shared = kv.shared;
  if (const auto* cpu = dynamic_cast<const cpu_backend*>(&be_)) {
    s.backend_free_blocks = cpu->kv().free_blocks();
    s.backend_total_blocks = cpu->kv().params().n_blocks;
  }
  const spec_metrics& m = dec_.metrics();
  s.requests_finished = finished_;
  s.tokens_generated = tokens_generated_;
  s.verify_steps = m.verify_steps();
  s.draft_tokens_proposed = m.draft_tokens_proposed();
  s.draft_tokens_accepted = m.draft_tokens_accepted();
  s.steps = steps_;
  s.step_tokens = m.verify_steps() + m.draft_tokens_verified();
  for (int32_t k = 0; k < m.positions() && k < static_cast<int32_t>(msg::k_max_positions); ++k)
    s.acceptance_by_position.push_back(static_cast<float>(m.conditional_acceptance(k)));
  const timed_policy& t = *policy_;
  s.plans = t.stats().plans;
  s.plan_request_rounds = t.stats().request_rounds;
  s.plan_drafts_verified = t.stats().drafts_verified;
  s.verify_budget_max = t.stats().budget_max;
  s.plan_seconds_sum = t.stats().plan_seconds;
  s.plan_seconds_p99 = t.plan_seconds_quantile(0.99);
  const prefix_cache_stats pc = be_.prefix_stats();
  s.prefix_cache_queries = pc.queries;
  s.prefix_cache_hits = pc.hits;
  s.prefix_cache_query_tokens = pc.query_tokens;
  s.prefix_cache_hit_tokens = pc.hit_tokens;
  s.prefix_cache_evictions = pc.evictions;
  s.prefix_cache_blocks = pc.cached_blocks;
  s.prefix_cache_evictable_blocks = pc.evictable_blocks;
  const spec_gate_stats& g = dec_.gate().stats();
  s.gate_closes = g.closes;
  s.gate_closed_steps = g.closed_steps;
  s.gate_detached = g.detached;
  s.gate_plain_admitted = g.plain_admitted;
  s.gate_reopens = g.reopens;
  s.gate_windows = g.windows;
  s.gate_open = dec_.gate().closed() ? 0 : 1;
  s.gate_last_gain = g.last_gain;
  s.gate_last_cost = g.last_cost;
  if (const auto* rd = dynamic_cast<const remote_drafter*>(drafter_)) {
    s.drafter = rd->current();
    s.drafter_timeouts = rd->timeouts();
  } else if (drafter_) {
    s.drafter = drafter_->caps().name;
  }
  return s;
}

}  // namespace dspark::actors

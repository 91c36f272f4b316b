// intake_core: see intake_core.h.
#include "actors/intake_core.h"

#include <cstdio>
#include <sstream>

#include "common/error.h"
#include "messages/wire.h"
#include "models/tokenizer/tokenizer.h"

namespace dspark::actors {

namespace m = dspark::messages;

namespace {

m::finish_reason to_finish(msg::end_reason r) {
  switch (r) {
    case msg::end_reason::stop: return m::finish_reason::stop;
    case msg::end_reason::length: return m::finish_reason::length;
    case msg::end_reason::context_full: return m::finish_reason::context_full;
    case msg::end_reason::cancelled: return m::finish_reason::cancelled;
  }
  return m::finish_reason::stop;
}

m::error_code to_code(msg::reject_code c) {
  switch (c) {
    case msg::reject_code::invalid_params: return m::error_code::invalid_params;
    case msg::reject_code::overloaded: return m::error_code::overloaded;
    case msg::reject_code::internal: return m::error_code::internal;
  }
  return m::error_code::internal;
}

}  // namespace

intake_core::intake_core(const tokenizer* tok, const intake_options& opt, send_fn to_client, send_fn to_engine)
    : tok_(tok), opt_(opt), to_client_(std::move(to_client)), to_engine_(std::move(to_engine)) {
  if (tok_ && !tok_->chat_template().empty()) tmpl_.emplace(tok_->chat_template());
}

void intake_core::reply(const std::string& client, const m::server_message& msg) {
  to_client_(frames{client, m::encode(msg)});
}

void intake_core::error(const std::string& client, std::optional<std::string> id, m::error_code c, std::string why) {
  if (c == m::error_code::overloaded) ++n_overloaded_;
  else ++n_bad_;
  reply(client, m::error_reply{std::move(id), c, std::move(why)});
}

void intake_core::to_engine() { to_engine_(frames{buf_}); }

void intake_core::on_client(frames&& f) {
  if (f.empty()) return;
  const std::string& client = f[0];
  if (f.size() != 2)
    return error(client, std::nullopt, m::error_code::bad_request,
                 "expected one frame per message, got " + std::to_string(f.size() - 1));
  auto decoded = m::decode_client_message(f[1], opt_.max_message_bytes);
  if (!decoded.ok()) {
    ++n_bad_;
    return reply(client, m::to_error_reply(decoded.error()));
  }
  m::client_message& cm = decoded.value();
  if (auto* s = std::get_if<m::submit_request>(&cm)) return submit(client, std::move(*s));
  if (auto* c = std::get_if<m::cancel_request>(&cm)) return cancel(client, c->id);
  if (std::holds_alternative<m::metrics_request>(cm)) return query(client, true);
  if (std::holds_alternative<m::health_request>(cm)) return query(client, false);
  m::models_reply mr;
  mr.models.push_back(m::model_info{opt_.model_id, opt_.n_ctx, opt_.draft});
  reply(client, mr);
}

std::optional<std::vector<int32_t>> intake_core::tokenize(const std::string& client, const m::submit_request& s) {
  try {
    if (auto* t = std::get_if<m::token_prompt>(&s.input)) {
      if (tok_)
        for (int32_t id : t->tokens)
          if (id >= tok_->n_vocab())
            throw invalid_argument_error("prompt_tokens: id " + std::to_string(id) + " is outside the vocabulary [0, " +
                                         std::to_string(tok_->n_vocab()) + ")");
      return t->tokens;
    }
    if (!tok_) throw invalid_argument_error("this server has no tokenizer: send prompt_tokens");
    if (auto* t = std::get_if<m::text_prompt>(&s.input)) return tok_->encode(t->text, true, true);
    const auto& chat = std::get<m::chat_prompt>(s.input);
    if (!tmpl_) throw invalid_argument_error("messages: the model has no chat template; send prompt");
    std::vector<chat_message> msgs;
    for (const auto& cmsg : chat.messages) msgs.push_back({cmsg.role, cmsg.content});
    // The rendered template carries its own BOS when the model wants one (as dspark generate --chat).
    return tok_->encode(tmpl_->apply(msgs, true), true, false);
  } catch (const std::exception& e) {
    error(client, s.id, m::error_code::invalid_params, e.what());
    return std::nullopt;
  }
}

void intake_core::submit(const std::string& client, m::submit_request&& s) {
  if (draining_) return error(client, s.id, m::error_code::overloaded, "the server is draining");
  if (by_client_id_.count({client, s.id}))
    return error(client, s.id, m::error_code::duplicate_id, "request '" + s.id + "' is still live");
  if (live() >= opt_.max_queued)
    return error(client, s.id, m::error_code::overloaded,
                 "the server holds " + std::to_string(live()) + " live requests (max_queued)");
  auto prompt = tokenize(client, s);
  if (!prompt) return;
  if (prompt->empty()) return error(client, s.id, m::error_code::invalid_params, "the prompt is empty");
  if (opt_.n_ctx > 0 && static_cast<int64_t>(prompt->size()) >= opt_.n_ctx)
    return error(client, s.id, m::error_code::invalid_params,
                 "the prompt has " + std::to_string(prompt->size()) + " tokens; the context holds " +
                     std::to_string(opt_.n_ctx));
  msg::submit_request r;
  r.key = next_key_++;
  r.prompt = std::move(*prompt);
  r.params.max_tokens = static_cast<int32_t>(s.params.max_tokens);
  r.params.temperature = static_cast<float>(s.params.temperature);
  r.params.top_k = static_cast<int32_t>(s.params.top_k);
  r.params.top_p = static_cast<float>(s.params.top_p);
  r.params.min_p = static_cast<float>(s.params.min_p);
  r.params.seed = s.params.seed ? *s.params.seed : next_seed_++;
  r.params.stop = s.params.stop;
  r.params.ignore_eos = s.params.ignore_eos;
  try {
    validate(r.params);
  } catch (const invalid_argument_error& e) {
    return error(client, s.id, m::error_code::invalid_params, e.what());
  }
  reqs_.emplace(r.key, live_request{client, s.id, s.stream, false});
  by_client_id_.emplace(std::make_pair(client, s.id), r.key);
  prompt_tokens_ += static_cast<int64_t>(r.prompt.size());
  reply(client, m::accepted_reply{s.id, static_cast<int64_t>(r.prompt.size())});
  msg::encode(r, buf_);
  to_engine();
}

void intake_core::cancel(const std::string& client, const std::string& id) {
  const auto it = by_client_id_.find({client, id});
  if (it == by_client_id_.end()) return error(client, id, m::error_code::unknown_id, "no live request '" + id + "'");
  msg::encode(msg::cancel_request{it->second}, buf_);
  to_engine();
}

void intake_core::on_client_lost(const std::string& client) {
  for (auto& [key, r] : reqs_) {
    if (r.client != client || r.orphan) continue;
    r.orphan = true;
    msg::encode(msg::cancel_request{key}, buf_);
    to_engine();
  }
}

void intake_core::on_engine_lost() {
  for (auto& [key, r] : reqs_) {
    ++n_error_;
    if (!r.orphan) reply(r.client, m::error_reply{r.id, m::error_code::internal, "the verifier connection was lost"});
  }
  reqs_.clear();
  by_client_id_.clear();
  for (auto& [cookie, q] : queries_)
    reply(q.client, m::error_reply{std::nullopt, m::error_code::internal, "the verifier connection was lost"});
  queries_.clear();
}

void intake_core::query(const std::string& client, bool metrics) {
  const uint64_t cookie = next_cookie_++;
  queries_.emplace(cookie, pending_query{client, metrics});
  msg::encode(msg::status_query{cookie}, buf_);
  to_engine();
}

void intake_core::finish(uint64_t key, const msg::request_done& d) {
  const auto it = reqs_.find(key);
  if (it == reqs_.end()) return;
  live_request& r = it->second;
  if (d.reason == msg::end_reason::cancelled) ++n_cancelled_;
  else ++n_done_;
  const msg::request_stats& s = d.stats;
  if (s.completion_tokens > 0) ttft_sum_ += s.ttft_s;
  if (s.completion_tokens > 1) {
    tpot_sum_ += s.tpot_s;
    ++tpot_count_;
  }
  accept_sum_ += s.acceptance_length;
  completion_tokens_ += s.completion_tokens;
  if (!r.orphan) {
    m::done_reply dr;
    dr.id = r.id;
    dr.text = d.text;
    dr.token_ids = d.token_ids;
    dr.reason = to_finish(d.reason);
    dr.stats = m::request_stats{s.prompt_tokens, s.completion_tokens, s.ttft_s, s.tpot_s, s.tokens_per_s,
                                s.acceptance_length, s.verify_steps, s.draft_tokens_proposed,
                                s.draft_tokens_accepted, s.cached_tokens};
    reply(r.client, dr);
  }
  by_client_id_.erase({r.client, r.id});
  reqs_.erase(it);
}

void intake_core::on_engine(frames&& f) {
  if (f.size() != 1) {
    std::fprintf(stderr, "intake: verifier sent %zu frames, expected 1; dropped\n", f.size());
    return;
  }
  msg::engine_message em;
  try {
    em = msg::decode_engine_message(f[0]);
  } catch (const msg::wire_error& e) {
    std::fprintf(stderr, "intake: malformed frame from the verifier: %s\n", e.what());
    return;
  }
  if (auto* t = std::get_if<msg::token_delta>(&em)) {
    const auto it = reqs_.find(t->key);
    if (it == reqs_.end() || it->second.orphan || !it->second.stream) return;
    reply(it->second.client, m::tokens_reply{it->second.id, std::move(t->token_ids), std::move(t->text)});
  } else if (auto* d = std::get_if<msg::request_done>(&em)) {
    finish(d->key, *d);
  } else if (auto* rj = std::get_if<msg::request_rejected>(&em)) {
    const auto it = reqs_.find(rj->key);
    if (it == reqs_.end()) return;
    ++n_error_;
    if (!it->second.orphan) reply(it->second.client, m::error_reply{it->second.id, to_code(rj->code), rj->message});
    by_client_id_.erase({it->second.client, it->second.id});
    reqs_.erase(it);
  } else if (auto* st = std::get_if<msg::status_report>(&em)) {
    const auto it = queries_.find(st->cookie);
    if (it == queries_.end()) return;
    if (it->second.metrics) {
      reply(it->second.client, m::metrics_reply{metrics_text(*st)});
    } else {
      reply(it->second.client, m::health_reply{draining_ ? m::health_status::draining : m::health_status::ok,
                                               st->active_requests, st->queued_requests});
    }
    queries_.erase(it);
  }
}

std::string intake_core::metrics_text(const msg::status_report& s) const {
  std::ostringstream o;
  auto gauge = [&](const char* name, const char* help, double v) {
    o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " gauge\n" << name << ' ' << v << '\n';
  };
  auto counter = [&](const char* name, const char* help, double v) {
    o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " counter\n" << name << ' ' << v << '\n';
  };
  o << "# HELP dspark_requests_total Requests by outcome.\n# TYPE dspark_requests_total counter\n";
  o << "dspark_requests_total{outcome=\"done\"} " << n_done_ << '\n';
  o << "dspark_requests_total{outcome=\"cancelled\"} " << n_cancelled_ << '\n';
  o << "dspark_requests_total{outcome=\"error\"} " << n_error_ << '\n';
  o << "dspark_requests_total{outcome=\"overloaded\"} " << n_overloaded_ << '\n';
  o << "dspark_requests_total{outcome=\"bad_request\"} " << n_bad_ << '\n';
  const int64_t finished = n_done_ + n_cancelled_;
  o << "# HELP dspark_ttft_seconds Time to first token.\n# TYPE dspark_ttft_seconds summary\n"
    << "dspark_ttft_seconds_sum " << ttft_sum_ << "\ndspark_ttft_seconds_count " << finished << '\n';
  o << "# HELP dspark_tpot_seconds Time per output token after the first.\n# TYPE dspark_tpot_seconds summary\n"
    << "dspark_tpot_seconds_sum " << tpot_sum_ << "\ndspark_tpot_seconds_count " << tpot_count_ << '\n';
  counter("dspark_prompt_tokens_total", "Prompt tokens admitted.", static_cast<double>(prompt_tokens_));
  counter("dspark_completion_tokens_total", "Tokens generated.", static_cast<double>(s.tokens_generated));
  const double accept = s.verify_steps > 0
                            ? static_cast<double>(s.verify_steps + s.draft_tokens_accepted) / static_cast<double>(s.verify_steps)
                            : 0.0;
  gauge("dspark_acceptance_length", "Mean tokens committed per verify round.", accept);
  o << "# HELP dspark_acceptance_by_position Conditional acceptance of draft position k.\n"
    << "# TYPE dspark_acceptance_by_position gauge\n";
  for (size_t k = 0; k < s.acceptance_by_position.size(); ++k)
    o << "dspark_acceptance_by_position{k=\"" << k << "\"} " << s.acceptance_by_position[k] << '\n';
  gauge("dspark_verify_tokens_per_step", "Tokens verified per decoder step.",
        s.steps > 0 ? static_cast<double>(s.step_tokens) / static_cast<double>(s.steps) : 0.0);
  // The scheduler: verify budget per step (tokens the verify forward carries), drafts verified
  // per request per step, and the time policy.plan takes (actors/scheduler.h).
  gauge("dspark_verify_tokens_per_step_max", "Largest tokens verified in one decoder step.", s.verify_budget_max);
  gauge("dspark_request_verify_length_mean", "Mean drafts verified per request per verify step.",
        s.plan_request_rounds > 0 ? static_cast<double>(s.plan_drafts_verified) / static_cast<double>(s.plan_request_rounds) : 0.0);
  counter("dspark_scheduler_plans_total", "Verify steps planned by the scheduling policy.", static_cast<double>(s.plans));
  gauge("dspark_scheduler_plan_seconds_mean", "Mean time of the policy's plan per verify step.",
        s.plans > 0 ? s.plan_seconds_sum / static_cast<double>(s.plans) : 0.0);
  gauge("dspark_scheduler_plan_seconds_p99", "99th percentile plan time over the last 4096 verify steps.",
        s.plan_seconds_p99);
  counter("dspark_draft_tokens_proposed_total", "Draft tokens proposed.", static_cast<double>(s.draft_tokens_proposed));
  counter("dspark_draft_tokens_accepted_total", "Draft tokens accepted.", static_cast<double>(s.draft_tokens_accepted));
  gauge("dspark_kv_blocks_total", "KV blocks in the kv_manager budget.", s.kv_blocks_total);
  gauge("dspark_kv_blocks_used", "KV blocks reserved by admitted requests.", s.kv_blocks_used);
  gauge("dspark_kv_blocks_shared", "KV blocks prefix sharing saves the admitted requests (counted once).", s.kv_blocks_shared);
  gauge("dspark_kv_usage_ratio", "Share of the KV budget reserved, shared blocks counted once.",
        s.kv_blocks_total > 0 ? static_cast<double>(s.kv_blocks_used - s.kv_blocks_shared) / s.kv_blocks_total : 0.0);
  gauge("dspark_backend_kv_free_blocks", "Free physical KV blocks of the backend, evictable cached ones included (-1 unknown).",
        s.backend_free_blocks);
  gauge("dspark_backend_kv_blocks", "Physical KV blocks of the backend (-1 unknown).", s.backend_total_blocks);
  // The prefix cache (engine/kv_block_pool.h): lookups, reused prompt tokens, cached blocks.
  counter("dspark_prefix_cache_queries_total", "Requests that looked up their prompt in the prefix cache.",
          static_cast<double>(s.prefix_cache_queries));
  counter("dspark_prefix_cache_hits_total", "Requests that reused at least one cached KV block.",
          static_cast<double>(s.prefix_cache_hits));
  counter("dspark_prefix_cache_query_tokens_total", "Prompt tokens looked up in the prefix cache.",
          static_cast<double>(s.prefix_cache_query_tokens));
  counter("dspark_prefix_cache_hit_tokens_total", "Prompt tokens served from the prefix cache (not prefilled).",
          static_cast<double>(s.prefix_cache_hit_tokens));
  // The speculation gate (engine/spec/spec_gate.h): where speculation was switched off.
  counter("dspark_spec_gate_closes_total", "Times the auto gate switched speculation off.", static_cast<double>(s.gate_closes));
  counter("dspark_spec_gate_closed_steps_total", "Decoder steps taken with speculation off by the gate.",
          static_cast<double>(s.gate_closed_steps));
  counter("dspark_spec_gate_detached_total", "Requests the gate took off the drafter.", static_cast<double>(s.gate_detached));
  counter("dspark_spec_gate_plain_admitted_total", "Requests that joined while the gate was closed (never drafted).",
          static_cast<double>(s.gate_plain_admitted));
  counter("dspark_spec_gate_reopens_total", "Times the auto gate switched speculation back on.",
          static_cast<double>(s.gate_reopens));
  counter("dspark_spec_gate_windows_total", "Decision windows the auto gate measured.", static_cast<double>(s.gate_windows));
  gauge("dspark_spec_gate_open", "1 while requests that join get the drafter, 0 while the gate is closed.", s.gate_open);
  gauge("dspark_spec_gate_last_gain", "Accepted drafts per request-step in the gate's last window (G).", s.gate_last_gain);
  gauge("dspark_spec_gate_last_cost",
        "What speculation cost in the gate's last window, as a share of plain decoding's time (o; it pays iff G > o).",
        s.gate_last_cost);
  counter("dspark_prefix_cache_evictions_total", "Cached KV blocks reclaimed for new data.",
          static_cast<double>(s.prefix_cache_evictions));
  gauge("dspark_prefix_cache_blocks", "KV blocks in the prefix cache (held or evictable).", s.prefix_cache_blocks);
  gauge("dspark_prefix_cache_evictable_blocks", "Cached KV blocks no request holds (free for admission).",
        s.prefix_cache_evictable_blocks);
  gauge("dspark_active_requests", "Requests in the running batch.", s.active_requests);
  gauge("dspark_queued_requests", "Requests waiting for KV admission.", s.queued_requests);
  gauge("dspark_live_requests", "Requests accepted by the intake and not yet finished.", live());
  counter("dspark_drafter_timeouts_total", "Proposals that missed the drafter deadline.", static_cast<double>(s.drafter_timeouts));
  o << "# HELP dspark_drafter_connected The drafter serving proposals (1 = connected).\n"
    << "# TYPE dspark_drafter_connected gauge\n"
    << "dspark_drafter_connected{name=\"" << s.drafter << "\"} " << (s.drafter.empty() ? 0 : 1) << '\n';
  return o.str();
}

}  // namespace dspark::actors

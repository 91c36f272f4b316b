// Encode/decode of the intake <-> verifier messages (engine_messages.h).
#include "messages/engine_messages.h"

#include "messages/wire.h"

namespace dspark::msg {

const char* end_reason_name(end_reason r) {
  switch (r) {
    case end_reason::stop: return "stop";
    case end_reason::length: return "length";
    case end_reason::context_full: return "context_full";
    case end_reason::cancelled: return "cancelled";
  }
  return "unknown";
}

const char* reject_code_name(reject_code c) {
  switch (c) {
    case reject_code::invalid_params: return "invalid_params";
    case reject_code::internal: return "internal";
    case reject_code::overloaded: return "overloaded";
  }
  return "internal";
}

namespace {

uint16_t tag(engine_type t) { return static_cast<uint16_t>(t); }

void put_stats(wire_writer& w, const request_stats& s) {
  w.i32(s.prompt_tokens);
  w.i32(s.completion_tokens);
  w.f64(s.ttft_s);
  w.f64(s.tpot_s);
  w.f64(s.tokens_per_s);
  w.f64(s.acceptance_length);
  w.i64(s.verify_steps);
  w.i64(s.draft_tokens_proposed);
  w.i64(s.draft_tokens_accepted);
  w.i32(s.cached_tokens);
}

request_stats get_stats(wire_reader& r) {
  request_stats s;
  s.prompt_tokens = r.i32("stats.prompt_tokens");
  s.completion_tokens = r.i32("stats.completion_tokens");
  s.ttft_s = r.f64("stats.ttft_s");
  s.tpot_s = r.f64("stats.tpot_s");
  s.tokens_per_s = r.f64("stats.tokens_per_s");
  s.acceptance_length = r.f64("stats.acceptance_length");
  s.verify_steps = r.i64("stats.verify_steps");
  s.draft_tokens_proposed = r.i64("stats.draft_tokens_proposed");
  s.draft_tokens_accepted = r.i64("stats.draft_tokens_accepted");
  s.cached_tokens = r.i32("stats.cached_tokens");
  return s;
}

template <class E>
E get_enum(wire_reader& r, const char* field, uint8_t max_value) {
  const uint8_t v = r.u8(field);
  if (v > max_value) throw wire_error(std::string("'") + field + "' out of range: " + std::to_string(v));
  return static_cast<E>(v);
}

}  // namespace

void encode(const submit_request& m, std::string& out) {
  wire_writer w(out, tag(engine_type::submit));
  w.u64(m.key);
  w.i32s(m.prompt);
  const sampling_params& p = m.params;
  w.f32(p.temperature);
  w.i32(p.top_k);
  w.f32(p.top_p);
  w.f32(p.min_p);
  w.u64(p.seed);
  w.i32(p.max_tokens);
  w.u8(p.ignore_eos ? 1 : 0);
  w.u32(static_cast<uint32_t>(p.stop.size()));
  for (const auto& s : p.stop) w.str(s);
}

void encode(const cancel_request& m, std::string& out) {
  wire_writer w(out, tag(engine_type::cancel));
  w.u64(m.key);
}

void encode(const status_query& m, std::string& out) {
  wire_writer w(out, tag(engine_type::status_query));
  w.u64(m.cookie);
}

void encode(const token_delta& m, std::string& out) {
  wire_writer w(out, tag(engine_type::token_delta));
  w.u64(m.key);
  w.i32s(m.token_ids);
  w.str(m.text);
}

void encode(const request_done& m, std::string& out) {
  wire_writer w(out, tag(engine_type::done));
  w.u64(m.key);
  w.i32s(m.token_ids);
  w.str(m.text);
  w.u8(static_cast<uint8_t>(m.reason));
  put_stats(w, m.stats);
}

void encode(const request_rejected& m, std::string& out) {
  wire_writer w(out, tag(engine_type::rejected));
  w.u64(m.key);
  w.u8(static_cast<uint8_t>(m.code));
  w.str(m.message);
}

void encode(const status_report& m, std::string& out) {
  wire_writer w(out, tag(engine_type::status));
  w.u64(m.cookie);
  w.i32(m.active_requests);
  w.i32(m.queued_requests);
  w.i32(m.kv_blocks_total);
  w.i32(m.kv_blocks_used);
  w.i32(m.backend_free_blocks);
  w.i32(m.backend_total_blocks);
  w.i32(m.kv_blocks_shared);
  w.i64(m.requests_finished);
  w.i64(m.tokens_generated);
  w.i64(m.verify_steps);
  w.i64(m.draft_tokens_proposed);
  w.i64(m.draft_tokens_accepted);
  w.i64(m.steps);
  w.i64(m.step_tokens);
  w.f32s(m.acceptance_by_position);
  w.str(m.drafter);
  w.i64(m.drafter_timeouts);
  w.i64(m.plans);
  w.i64(m.plan_request_rounds);
  w.i64(m.plan_drafts_verified);
  w.i32(m.verify_budget_max);
  w.f64(m.plan_seconds_sum);
  w.f64(m.plan_seconds_p99);
  w.i64(m.prefix_cache_queries);
  w.i64(m.prefix_cache_hits);
  w.i64(m.prefix_cache_query_tokens);
  w.i64(m.prefix_cache_hit_tokens);
  w.i64(m.prefix_cache_evictions);
  w.i32(m.prefix_cache_blocks);
  w.i32(m.prefix_cache_evictable_blocks);
  w.i64(m.gate_closes);
  w.i64(m.gate_closed_steps);
  w.i64(m.gate_detached);
  w.i64(m.gate_plain_admitted);
  w.i64(m.gate_reopens);
  w.i64(m.gate_windows);
  w.i32(m.gate_open);
  w.f64(m.gate_last_gain);
  w.f64(m.gate_last_cost);
}

engine_message decode_engine_message(std::string_view frame) {
  wire_reader r(frame);
  engine_message out;
  switch (static_cast<engine_type>(r.type())) {
    case engine_type::submit: {
      submit_request m;
      m.key = r.u64("key");
      r.i32s("prompt", k_max_prompt_tokens, m.prompt);
      m.params.temperature = r.f32("temperature");
      m.params.top_k = r.i32("top_k");
      m.params.top_p = r.f32("top_p");
      m.params.min_p = r.f32("min_p");
      m.params.seed = r.u64("seed");
      m.params.max_tokens = r.i32("max_tokens");
      m.params.ignore_eos = get_enum<uint8_t>(r, "ignore_eos", 1) != 0;
      const uint32_t n_stop = r.u32("stop count");
      if (n_stop > k_max_stop_strings)
        throw wire_error("'stop' has " + std::to_string(n_stop) + " strings, at most " +
                         std::to_string(k_max_stop_strings) + " allowed");
      for (uint32_t i = 0; i < n_stop; ++i) m.params.stop.push_back(r.str("stop", k_max_stop_bytes));
      out = std::move(m);
      break;
    }
    case engine_type::cancel: out = cancel_request{r.u64("key")}; break;
    case engine_type::status_query: out = status_query{r.u64("cookie")}; break;
    case engine_type::token_delta: {
      token_delta m;
      m.key = r.u64("key");
      r.i32s("token_ids", k_max_prompt_tokens, m.token_ids);
      m.text = r.str("text", k_max_text_bytes);
      out = std::move(m);
      break;
    }
    case engine_type::done: {
      request_done m;
      m.key = r.u64("key");
      r.i32s("token_ids", k_max_prompt_tokens, m.token_ids);
      m.text = r.str("text", k_max_text_bytes);
      m.reason = get_enum<end_reason>(r, "finish_reason", static_cast<uint8_t>(end_reason::cancelled));
      m.stats = get_stats(r);
      out = std::move(m);
      break;
    }
    case engine_type::rejected: {
      request_rejected m;
      m.key = r.u64("key");
      m.code = get_enum<reject_code>(r, "code", static_cast<uint8_t>(reject_code::overloaded));
      m.message = r.str("message", 4096);
      out = std::move(m);
      break;
    }
    case engine_type::status: {
      status_report m;
      m.cookie = r.u64("cookie");
      m.active_requests = r.i32("active_requests");
      m.queued_requests = r.i32("queued_requests");
      m.kv_blocks_total = r.i32("kv_blocks_total");
      m.kv_blocks_used = r.i32("kv_blocks_used");
      m.backend_free_blocks = r.i32("backend_free_blocks");
      m.backend_total_blocks = r.i32("backend_total_blocks");
      m.kv_blocks_shared = r.i32("kv_blocks_shared");
      m.requests_finished = r.i64("requests_finished");
      m.tokens_generated = r.i64("tokens_generated");
      m.verify_steps = r.i64("verify_steps");
      m.draft_tokens_proposed = r.i64("draft_tokens_proposed");
      m.draft_tokens_accepted = r.i64("draft_tokens_accepted");
      m.steps = r.i64("steps");
      m.step_tokens = r.i64("step_tokens");
      r.f32s("acceptance_by_position", k_max_positions, m.acceptance_by_position);
      m.drafter = r.str("drafter", 256);
      m.drafter_timeouts = r.i64("drafter_timeouts");
      m.plans = r.i64("plans");
      m.plan_request_rounds = r.i64("plan_request_rounds");
      m.plan_drafts_verified = r.i64("plan_drafts_verified");
      m.verify_budget_max = r.i32("verify_budget_max");
      m.plan_seconds_sum = r.f64("plan_seconds_sum");
      m.plan_seconds_p99 = r.f64("plan_seconds_p99");
      m.prefix_cache_queries = r.i64("prefix_cache_queries");
      m.prefix_cache_hits = r.i64("prefix_cache_hits");
      m.prefix_cache_query_tokens = r.i64("prefix_cache_query_tokens");
      m.prefix_cache_hit_tokens = r.i64("prefix_cache_hit_tokens");
      m.prefix_cache_evictions = r.i64("prefix_cache_evictions");
      m.prefix_cache_blocks = r.i32("prefix_cache_blocks");
      m.prefix_cache_evictable_blocks = r.i32("prefix_cache_evictable_blocks");
      m.gate_closes = r.i64("gate_closes");
      m.gate_closed_steps = r.i64("gate_closed_steps");
      m.gate_detached = r.i64("gate_detached");
      m.gate_plain_admitted = r.i64("gate_plain_admitted");
      m.gate_reopens = r.i64("gate_reopens");
      m.gate_windows = r.i64("gate_windows");
      m.gate_open = r.i32("gate_open");
      m.gate_last_gain = r.f64("gate_last_gain");
      m.gate_last_cost = r.f64("gate_last_cost");
      out = std::move(m);
      break;
    }
    default:
      throw wire_error("unknown engine message type " + std::to_string(r.type()));
  }
  r.finish();
  return out;
}

}  // namespace dspark::msg

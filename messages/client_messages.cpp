// JSON codec of the client protocol (docs/protocol.md). Decoding reads each field with its JSON
// type checked, then checks ranges in one place (validate_params); any failure inside is a
// `rejection` exception that never leaves this file.
#include "messages/client_messages.h"

#include <cmath>
#include <cstdio>
#include <limits>

#include <nlohmann/json.hpp>

namespace dspark::messages {

namespace {

using json = nlohmann::json;

struct rejection {
  error_code code;
  std::string message;
};

[[noreturn]] void reject(error_code code, std::string message) { throw rejection{code, std::move(message)}; }

std::string format_double(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// ---- typed field readers ------------------------------------------------------------------
// `name` is the field's path in the message ("params.top_k"); `code` what a wrong value is.

const json* find(const json& obj, const char* key) {
  auto it = obj.find(key);
  return it == obj.end() ? nullptr : &*it;
}

const json& require(const json& obj, const char* key, error_code code = error_code::bad_request) {
  const json* v = find(obj, key);
  if (!v) reject(code, std::string("missing field '") + key + "'");
  return *v;
}

std::string as_string(const json& v, std::string_view name, error_code code = error_code::bad_request) {
  if (!v.is_string()) reject(code, std::string(name) + ": expected a string");
  return v.get<std::string>();
}

bool as_bool(const json& v, std::string_view name, error_code code = error_code::bad_request) {
  if (!v.is_boolean()) reject(code, std::string(name) + ": expected true or false");
  return v.get<bool>();
}

int64_t as_int(const json& v, std::string_view name, error_code code = error_code::bad_request,
               int64_t lo = std::numeric_limits<int64_t>::min(), int64_t hi = std::numeric_limits<int64_t>::max()) {
  if (!v.is_number_integer()) reject(code, std::string(name) + ": expected an integer");
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(hi))
    reject(code, std::string(name) + ": must be at most " + std::to_string(hi));
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi)
    reject(code, std::string(name) + ": must be in [" + std::to_string(lo) + ", " + std::to_string(hi) + "], got " +
                     std::to_string(x));
  return x;
}

uint64_t as_u64(const json& v, std::string_view name, error_code code) {
  if (!v.is_number_unsigned()) reject(code, std::string(name) + ": expected an integer in [0, 2^64)");
  return v.get<uint64_t>();
}

double as_double(const json& v, std::string_view name, error_code code = error_code::bad_request) {
  if (!v.is_number()) reject(code, std::string(name) + ": expected a number");
  const double x = v.get<double>();
  if (!std::isfinite(x)) reject(code, std::string(name) + ": must be finite");
  return x;
}

std::vector<int32_t> as_token_ids(const json& v, std::string_view name, error_code code = error_code::bad_request) {
  if (!v.is_array()) reject(code, std::string(name) + ": expected an array of token ids");
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (const auto& t : v)
    ids.push_back(static_cast<int32_t>(as_int(t, name, code, 0, std::numeric_limits<int32_t>::max())));
  return ids;
}

std::string as_id(const json& obj) {
  std::string id = as_string(require(obj, "id"), "id");
  if (id.empty() || id.size() > k_max_id_bytes)
    reject(error_code::bad_request, "id: must be 1 to " + std::to_string(k_max_id_bytes) + " bytes");
  return id;
}

// ---- client messages ----------------------------------------------------------------------

sampling_params read_params(const json& p) {
  constexpr auto bad = error_code::invalid_params;
  if (!p.is_object()) reject(bad, "params: expected an object");
  sampling_params s;
  if (auto* v = find(p, "max_tokens")) s.max_tokens = as_int(*v, "params.max_tokens", bad);
  if (auto* v = find(p, "temperature")) s.temperature = as_double(*v, "params.temperature", bad);
  if (auto* v = find(p, "top_k")) s.top_k = as_int(*v, "params.top_k", bad);
  if (auto* v = find(p, "top_p")) s.top_p = as_double(*v, "params.top_p", bad);
  if (auto* v = find(p, "min_p")) s.min_p = as_double(*v, "params.min_p", bad);
  if (auto* v = find(p, "seed")) s.seed = as_u64(*v, "params.seed", bad);
  if (auto* v = find(p, "stop")) {
    if (!v->is_array()) reject(bad, "params.stop: expected an array of strings");
    if (v->size() > k_max_stop_strings)
      reject(bad, "params.stop: at most " + std::to_string(k_max_stop_strings) + " strings");
    for (const auto& x : *v) s.stop.push_back(as_string(x, "params.stop", bad));
  }
  if (auto* v = find(p, "ignore_eos")) s.ignore_eos = as_bool(*v, "params.ignore_eos", bad);
  if (auto err = validate_params(s)) throw rejection{err->code, err->message};
  return s;
}

chat_prompt read_chat(const json& v) {
  if (!v.is_array() || v.empty()) reject(error_code::bad_request, "messages: expected a non-empty array");
  chat_prompt chat;
  for (const auto& m : v) {
    if (!m.is_object()) reject(error_code::bad_request, "messages: each entry must be an object {role, content}");
    chat_message cm{as_string(require(m, "role"), "messages.role"), as_string(require(m, "content"), "messages.content")};
    if (cm.role != "system" && cm.role != "user" && cm.role != "assistant")
      reject(error_code::bad_request, "messages.role: must be system, user or assistant, got '" + cm.role + "'");
    chat.messages.push_back(std::move(cm));
  }
  return chat;
}

submit_request read_submit(const json& obj) {
  submit_request r;
  r.id = as_id(obj);
  const json* prompt = find(obj, "prompt");
  const json* messages = find(obj, "messages");
  const json* tokens = find(obj, "prompt_tokens");
  if ((prompt != nullptr) + (messages != nullptr) + (tokens != nullptr) != 1)
    reject(error_code::bad_request, "submit needs exactly one of prompt, messages, prompt_tokens");
  if (prompt) {
    r.input = text_prompt{as_string(*prompt, "prompt")};
  } else if (messages) {
    r.input = read_chat(*messages);
  } else {
    auto ids = as_token_ids(*tokens, "prompt_tokens");
    if (ids.empty()) reject(error_code::bad_request, "prompt_tokens: must not be empty");
    r.input = token_prompt{std::move(ids)};
  }
  if (auto* p = find(obj, "params")) r.params = read_params(*p);
  if (auto* s = find(obj, "stream")) r.stream = as_bool(*s, "stream");
  return r;
}

client_message read_client(const json& obj, const std::string& type) {
  if (type == "submit") return read_submit(obj);
  if (type == "cancel") return cancel_request{as_id(obj)};
  if (type == "metrics") return metrics_request{};
  if (type == "models") return models_request{};
  if (type == "health") return health_request{};
  reject(error_code::bad_request, "unknown client message type '" + type + "'");
}

// ---- server messages ----------------------------------------------------------------------

request_stats read_stats(const json& v) {
  if (!v.is_object()) reject(error_code::bad_request, "stats: expected an object");
  request_stats s;
  auto i = [&](const char* k) { return as_int(require(v, k), std::string("stats.") + k, error_code::bad_request, 0); };
  auto d = [&](const char* k) { return as_double(require(v, k), std::string("stats.") + k); };
  s.prompt_tokens = i("prompt_tokens");
  s.completion_tokens = i("completion_tokens");
  s.ttft_s = d("ttft_s");
  s.tpot_s = d("tpot_s");
  s.tokens_per_s = d("tokens_per_s");
  s.acceptance_length = d("acceptance_length");
  s.verify_steps = i("verify_steps");
  s.draft_tokens_proposed = i("draft_tokens_proposed");
  s.draft_tokens_accepted = i("draft_tokens_accepted");
  if (const json* c = find(v, "cached_tokens"))  // added later: servers before it leave it out
    s.cached_tokens = as_int(*c, "stats.cached_tokens", error_code::bad_request, 0);
  return s;
}

server_message read_server(const json& obj, const std::string& type) {
  if (type == "accepted") return accepted_reply{as_id(obj), as_int(require(obj, "prompt_tokens"), "prompt_tokens", error_code::bad_request, 0)};
  if (type == "tokens")
    return tokens_reply{as_id(obj), as_token_ids(require(obj, "token_ids"), "token_ids"), as_string(require(obj, "text"), "text")};
  if (type == "done") {
    done_reply d;
    d.id = as_id(obj);
    d.text = as_string(require(obj, "text"), "text");
    d.token_ids = as_token_ids(require(obj, "token_ids"), "token_ids");
    const std::string reason = as_string(require(obj, "finish_reason"), "finish_reason");
    auto r = parse_finish_reason(reason);
    if (!r) reject(error_code::bad_request, "finish_reason: unknown value '" + reason + "'");
    d.reason = *r;
    d.stats = read_stats(require(obj, "stats"));
    return d;
  }
  if (type == "error") {
    error_reply e;
    if (find(obj, "id")) e.id = as_id(obj);
    const std::string code = as_string(require(obj, "code"), "code");
    auto c = parse_error_code(code);
    if (!c) reject(error_code::bad_request, "code: unknown error code '" + code + "'");
    e.code = *c;
    e.message = as_string(require(obj, "message"), "message");
    return e;
  }
  if (type == "metrics") return metrics_reply{as_string(require(obj, "text"), "text")};
  if (type == "models") {
    const json& list = require(obj, "models");
    if (!list.is_array()) reject(error_code::bad_request, "models: expected an array");
    models_reply m;
    for (const auto& x : list) {
      if (!x.is_object()) reject(error_code::bad_request, "models: each entry must be an object");
      m.models.push_back({as_string(require(x, "id"), "models.id"),
                          as_int(require(x, "n_ctx"), "models.n_ctx", error_code::bad_request, 0),
                          as_string(require(x, "draft"), "models.draft")});
    }
    return m;
  }
  if (type == "health") {
    health_reply h;
    const std::string status = as_string(require(obj, "status"), "status");
    if (status == "ok") h.status = health_status::ok;
    else if (status == "draining") h.status = health_status::draining;
    else reject(error_code::bad_request, "status: must be ok or draining, got '" + status + "'");
    h.active_requests = as_int(require(obj, "active_requests"), "active_requests", error_code::bad_request, 0);
    h.queued_requests = as_int(require(obj, "queued_requests"), "queued_requests", error_code::bad_request, 0);
    return h;
  }
  reject(error_code::bad_request, "unknown server message type '" + type + "'");
}

// Shared frame checks: size, depth, JSON syntax (incl. UTF-8), object, version, type. On a
// rejection after the object is parsed, the error carries the frame's id when it is readable.
template <class Message, class Reader>
decode_result<Message> decode_frame(std::string_view frame, size_t max_bytes, Reader read) {
  if (frame.size() > max_bytes)
    return decode_error{error_code::too_large,
                        "message of " + std::to_string(frame.size()) + " bytes exceeds the limit of " +
                            std::to_string(max_bytes), std::nullopt};
  if (!json_within_depth(frame, k_max_json_depth))
    return decode_error{error_code::bad_request,
                        "JSON nested deeper than " + std::to_string(k_max_json_depth) + " levels", std::nullopt};
  json obj;
  try {
    obj = json::parse(frame);
  } catch (const json::exception& e) {
    return decode_error{error_code::bad_request, std::string("invalid JSON: ") + e.what(), std::nullopt};
  }
  if (!obj.is_object()) return decode_error{error_code::bad_request, "message must be a JSON object", std::nullopt};
  try {
    const json* v = find(obj, "v");
    if (!v || !v->is_number_integer() || v->get<int64_t>() != k_protocol_version)
      reject(error_code::bad_request, "unsupported protocol version (this peer speaks \"v\": 1)");
    return read(obj, as_string(require(obj, "type"), "type"));
  } catch (const rejection& r) {
    decode_error err{r.code, r.message, std::nullopt};
    const json* id = find(obj, "id");
    if (id && id->is_string() && !id->get_ref<const std::string&>().empty() &&
        id->get_ref<const std::string&>().size() <= k_max_id_bytes)
      err.id = id->get<std::string>();
    return err;
  } catch (const json::exception& e) {  // not expected: every access is type-checked first
    return decode_error{error_code::bad_request, std::string("malformed message: ") + e.what(), std::nullopt};
  }
}

// ---- encoding -----------------------------------------------------------------------------

json header(const char* type) { return json{{"v", k_protocol_version}, {"type", type}}; }

// Stats are measurements; a non-finite one (no tokens yet) is sent as 0 so the frame stays JSON.
double finite_or_zero(double x) { return std::isfinite(x) ? x : 0.0; }

json to_json(const sampling_params& p) {
  json j{{"max_tokens", p.max_tokens}, {"temperature", p.temperature}, {"top_k", p.top_k},
         {"top_p", p.top_p},           {"min_p", p.min_p},             {"ignore_eos", p.ignore_eos}};
  if (p.seed) j["seed"] = *p.seed;
  if (!p.stop.empty()) j["stop"] = p.stop;
  return j;
}

struct client_encoder {
  json operator()(const submit_request& r) const {
    json j = header("submit");
    j["id"] = r.id;
    if (auto* t = std::get_if<text_prompt>(&r.input)) {
      j["prompt"] = t->text;
    } else if (auto* c = std::get_if<chat_prompt>(&r.input)) {
      json list = json::array();
      for (const auto& m : c->messages) list.push_back({{"role", m.role}, {"content", m.content}});
      j["messages"] = std::move(list);
    } else {
      j["prompt_tokens"] = std::get<token_prompt>(r.input).tokens;
    }
    j["params"] = to_json(r.params);
    j["stream"] = r.stream;
    return j;
  }
  json operator()(const cancel_request& r) const {
    json j = header("cancel");
    j["id"] = r.id;
    return j;
  }
  json operator()(const metrics_request&) const { return header("metrics"); }
  json operator()(const models_request&) const { return header("models"); }
  json operator()(const health_request&) const { return header("health"); }
};

struct server_encoder {
  json operator()(const accepted_reply& r) const {
    json j = header("accepted");
    j["id"] = r.id;
    j["prompt_tokens"] = r.prompt_tokens;
    return j;
  }
  json operator()(const tokens_reply& r) const {
    json j = header("tokens");
    j["id"] = r.id;
    j["token_ids"] = r.token_ids;
    j["text"] = r.text;
    return j;
  }
  json operator()(const done_reply& r) const {
    json j = header("done");
    j["id"] = r.id;
    j["text"] = r.text;
    j["token_ids"] = r.token_ids;
    j["finish_reason"] = to_string(r.reason);
    const auto& s = r.stats;
    j["stats"] = {{"prompt_tokens", s.prompt_tokens},
                  {"completion_tokens", s.completion_tokens},
                  {"ttft_s", finite_or_zero(s.ttft_s)},
                  {"tpot_s", finite_or_zero(s.tpot_s)},
                  {"tokens_per_s", finite_or_zero(s.tokens_per_s)},
                  {"acceptance_length", finite_or_zero(s.acceptance_length)},
                  {"verify_steps", s.verify_steps},
                  {"draft_tokens_proposed", s.draft_tokens_proposed},
                  {"draft_tokens_accepted", s.draft_tokens_accepted},
                  {"cached_tokens", s.cached_tokens}};
    return j;
  }
  json operator()(const error_reply& r) const {
    json j = header("error");
    if (r.id) j["id"] = *r.id;
    j["code"] = to_string(r.code);
    j["message"] = r.message;
    return j;
  }
  json operator()(const metrics_reply& r) const {
    json j = header("metrics");
    j["text"] = r.text;
    return j;
  }
  json operator()(const models_reply& r) const {
    json j = header("models");
    json list = json::array();
    for (const auto& m : r.models) list.push_back({{"id", m.id}, {"n_ctx", m.n_ctx}, {"draft", m.draft}});
    j["models"] = std::move(list);
    return j;
  }
  json operator()(const health_reply& r) const {
    json j = header("health");
    j["status"] = to_string(r.status);
    j["active_requests"] = r.active_requests;
    j["queued_requests"] = r.queued_requests;
    return j;
  }
};

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

}  // namespace

std::string_view to_string(error_code code) {
  switch (code) {
    case error_code::bad_request: return "bad_request";
    case error_code::invalid_params: return "invalid_params";
    case error_code::too_large: return "too_large";
    case error_code::overloaded: return "overloaded";
    case error_code::unknown_id: return "unknown_id";
    case error_code::duplicate_id: return "duplicate_id";
    case error_code::internal: return "internal";
  }
  return "internal";
}

std::optional<error_code> parse_error_code(std::string_view s) {
  for (auto c : {error_code::bad_request, error_code::invalid_params, error_code::too_large, error_code::overloaded,
                 error_code::unknown_id, error_code::duplicate_id, error_code::internal})
    if (to_string(c) == s) return c;
  return std::nullopt;
}

std::string_view to_string(finish_reason reason) {
  switch (reason) {
    case finish_reason::stop: return "stop";
    case finish_reason::length: return "length";
    case finish_reason::cancelled: return "cancelled";
    case finish_reason::context_full: return "context_full";
  }
  return "stop";
}

std::optional<finish_reason> parse_finish_reason(std::string_view s) {
  for (auto r : {finish_reason::stop, finish_reason::length, finish_reason::cancelled, finish_reason::context_full})
    if (to_string(r) == s) return r;
  return std::nullopt;
}

std::string_view to_string(health_status status) { return status == health_status::ok ? "ok" : "draining"; }

std::optional<decode_error> validate_params(const sampling_params& p) {
  auto bad = [](std::string msg) { return decode_error{error_code::invalid_params, std::move(msg), std::nullopt}; };
  if (p.max_tokens < 1 || p.max_tokens > k_max_max_tokens)
    return bad("params.max_tokens: must be in [1, " + std::to_string(k_max_max_tokens) + "], got " +
               std::to_string(p.max_tokens));
  if (!(p.temperature >= 0.0 && p.temperature <= 100.0))
    return bad("params.temperature: must be in [0, 100], got " + format_double(p.temperature));
  if (p.top_k < 0 || p.top_k > std::numeric_limits<int32_t>::max())
    return bad("params.top_k: must be >= 0 (0 = off), got " + std::to_string(p.top_k));
  if (!(p.top_p > 0.0 && p.top_p <= 1.0)) return bad("params.top_p: must be in (0, 1], got " + format_double(p.top_p));
  if (!(p.min_p >= 0.0 && p.min_p < 1.0)) return bad("params.min_p: must be in [0, 1), got " + format_double(p.min_p));
  if (p.stop.size() > k_max_stop_strings)
    return bad("params.stop: at most " + std::to_string(k_max_stop_strings) + " strings");
  for (const auto& s : p.stop)
    if (s.empty() || s.size() > k_max_stop_bytes)
      return bad("params.stop: each string must be 1 to " + std::to_string(k_max_stop_bytes) + " bytes");
  return std::nullopt;
}

// Nesting depth of brackets outside strings: checked before parsing, so a hostile frame of
// a million '[' costs one linear scan and no parser recursion or allocation.
bool json_within_depth(std::string_view frame, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : frame) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return true;
}

error_reply to_error_reply(const decode_error& error) { return error_reply{error.id, error.code, error.message}; }

std::string encode(const client_message& message) { return dump(std::visit(client_encoder{}, message)); }
std::string encode(const server_message& message) { return dump(std::visit(server_encoder{}, message)); }

decode_result<client_message> decode_client_message(std::string_view frame, size_t max_bytes) {
  return decode_frame<client_message>(frame, max_bytes, read_client);
}

decode_result<server_message> decode_server_message(std::string_view frame, size_t max_bytes) {
  return decode_frame<server_message>(frame, max_bytes, read_server);
}

}  // namespace dspark::messages

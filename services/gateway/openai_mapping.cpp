// Parameter mapping and response formatting for the OpenAI-compatible endpoints.
#include "services/gateway/openai_mapping.h"

#include <cmath>
#include <limits>

#include <nlohmann/json.hpp>

namespace dspark::gateway {

namespace {

using json = nlohmann::json;
namespace dm = dspark::messages;

struct refusal {
  api_error error;
};

[[noreturn]] void refuse(const std::string& param, const std::string& message, int status = 400) {
  throw refusal{api_error{status, message, "invalid_request_error", param, ""}};
}

bool present(const json& body, const char* key) {
  auto it = body.find(key);
  return it != body.end() && !it->is_null();
}

double number(const json& v, const char* name) {
  if (!v.is_number()) refuse(name, std::string("'") + name + "' must be a number");
  const double x = v.get<double>();
  if (!std::isfinite(x)) refuse(name, std::string("'") + name + "' must be finite");
  return x;
}

int64_t integer(const json& v, const char* name) {
  if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > INT64_MAX))
    refuse(name, std::string("'") + name + "' must be an integer");
  return v.get<int64_t>();
}

// Parameters OpenAI has that the engine does not implement: allowed only at their neutral value.
void refuse_unsupported(const json& b) {
  for (const char* p : {"presence_penalty", "frequency_penalty"})
    if (present(b, p) && number(b[p], p) != 0.0) refuse(p, std::string("'") + p + "' is not supported (only 0)");
  if (present(b, "logprobs") && !(b["logprobs"].is_boolean() && !b["logprobs"].get<bool>()) &&
      !(b["logprobs"].is_number_integer() && b["logprobs"].get<int64_t>() == 0))
    refuse("logprobs", "'logprobs' is not supported");
  if (present(b, "top_logprobs") && !(b["top_logprobs"].is_number_integer() && b["top_logprobs"].get<int64_t>() == 0))
    refuse("top_logprobs", "'top_logprobs' is not supported");
  if (present(b, "logit_bias") && !(b["logit_bias"].is_object() && b["logit_bias"].empty()))
    refuse("logit_bias", "'logit_bias' is not supported");
  for (const char* p : {"tools", "functions"})
    if (present(b, p) && !(b[p].is_array() && b[p].empty())) refuse(p, std::string("'") + p + "' is not supported");
  for (const char* p : {"tool_choice", "function_call"})
    if (present(b, p) && b[p] != "none") refuse(p, std::string("'") + p + "' is not supported");
  if (present(b, "best_of") && b["best_of"] != 1) refuse("best_of", "'best_of' must be 1");
  if (present(b, "echo") && b["echo"] != false) refuse("echo", "'echo' is not supported");
  if (present(b, "suffix") && b["suffix"] != "") refuse("suffix", "'suffix' is not supported");
  if (present(b, "response_format") &&
      !(b["response_format"].is_object() && b["response_format"].value("type", "") == "text"))
    refuse("response_format", "only response_format {\"type\": \"text\"} is supported");
}

dm::sampling_params read_params(const json& b) {
  dm::sampling_params p;
  p.temperature = 1.0;  // OpenAI's default; the protocol's is 0
  const char* max_name = present(b, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (present(b, max_name)) {
    p.max_tokens = integer(b[max_name], max_name);
    if (p.max_tokens < 1 || p.max_tokens > dm::k_max_max_tokens)
      refuse(max_name, std::string("'") + max_name + "' must be in [1, " + std::to_string(dm::k_max_max_tokens) + "]");
  }
  if (present(b, "temperature")) {
    p.temperature = number(b["temperature"], "temperature");
    if (p.temperature < 0 || p.temperature > 2) refuse("temperature", "'temperature' must be in [0, 2]");
  }
  if (present(b, "top_p")) {
    p.top_p = number(b["top_p"], "top_p");
    if (!(p.top_p > 0 && p.top_p <= 1)) refuse("top_p", "'top_p' must be in (0, 1]");
  }
  if (present(b, "top_k")) {
    p.top_k = integer(b["top_k"], "top_k");
    if (p.top_k < 0 || p.top_k > std::numeric_limits<int32_t>::max()) refuse("top_k", "'top_k' must be >= 0 (0 = off)");
  }
  if (present(b, "min_p")) {
    p.min_p = number(b["min_p"], "min_p");
    if (!(p.min_p >= 0 && p.min_p < 1)) refuse("min_p", "'min_p' must be in [0, 1)");
  }
  if (present(b, "seed")) {
    const json& s = b["seed"];
    if (!s.is_number_unsigned()) refuse("seed", "'seed' must be an integer >= 0");
    p.seed = s.get<uint64_t>();
  }
  if (present(b, "stop")) {
    const json& s = b["stop"];
    if (s.is_string()) {
      p.stop.push_back(s.get<std::string>());
    } else if (s.is_array()) {
      for (const auto& x : s) {
        if (!x.is_string()) refuse("stop", "'stop' must be a string or a list of strings");
        p.stop.push_back(x.get<std::string>());
      }
    } else {
      refuse("stop", "'stop' must be a string or a list of strings");
    }
    if (p.stop.size() > dm::k_max_stop_strings)
      refuse("stop", "'stop' takes at most " + std::to_string(dm::k_max_stop_strings) + " strings");
    for (const auto& x : p.stop)
      if (x.empty() || x.size() > dm::k_max_stop_bytes)
        refuse("stop", "each stop string must be 1 to " + std::to_string(dm::k_max_stop_bytes) + " bytes");
  }
  if (present(b, "ignore_eos")) {
    if (!b["ignore_eos"].is_boolean()) refuse("ignore_eos", "'ignore_eos' must be true or false");
    p.ignore_eos = b["ignore_eos"].get<bool>();
  }
  if (present(b, "n") && b["n"] != 1) refuse("n", "only n = 1 is supported");
  // The codec's own range check is the last word (shared with the server).
  if (auto err = dm::validate_params(p)) refuse("", err->message);
  return p;
}

std::vector<int32_t> token_list(const json& v) {
  std::vector<int32_t> ids;
  for (const auto& t : v) {
    if (!t.is_number_unsigned() || t.get<uint64_t>() > static_cast<uint64_t>(INT32_MAX))
      refuse("prompt", "token ids in 'prompt' must be integers in [0, 2^31)");
    ids.push_back(static_cast<int32_t>(t.get<uint64_t>()));
  }
  if (ids.empty()) refuse("prompt", "'prompt' must not be empty");
  return ids;
}

dm::prompt_input read_prompt(const json& b) {
  if (!present(b, "prompt")) refuse("prompt", "'prompt' is required");
  const json& p = b["prompt"];
  if (p.is_string()) return dm::text_prompt{p.get<std::string>()};
  if (p.is_array() && !p.empty() && p[0].is_number()) return dm::token_prompt{token_list(p)};
  if (p.is_array() && p.size() == 1 && p[0].is_string()) return dm::text_prompt{p[0].get<std::string>()};
  if (p.is_array() && p.size() == 1 && p[0].is_array()) return dm::token_prompt{token_list(p[0])};
  if (p.is_array() && p.size() > 1) refuse("prompt", "only one prompt per request is supported");
  refuse("prompt", "'prompt' must be a string, a list of token ids, or a list of one of those");
}

std::string message_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) refuse("messages", "message 'content' must be a string or a list of text parts");
  std::string text;
  for (const auto& part : content) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
      refuse("messages", "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
    text += part["text"].get<std::string>();
  }
  return text;
}

dm::prompt_input read_messages(const json& b) {
  if (!present(b, "messages") || !b["messages"].is_array() || b["messages"].empty())
    refuse("messages", "'messages' must be a non-empty list");
  dm::chat_prompt chat;
  for (const auto& m : b["messages"]) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      refuse("messages", "each message needs a 'role' string");
    std::string role = m["role"].get<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for the system role
    if (role != "system" && role != "user" && role != "assistant")
      refuse("messages", "message role '" + role + "' is not supported (system, developer, user, assistant)");
    if (!m.contains("content") || m["content"].is_null()) refuse("messages", "each message needs 'content'");
    chat.messages.push_back({role, message_text(m["content"])});
  }
  return chat;
}

json usage_json(const dm::request_stats& s) {
  json u = {{"prompt_tokens", s.prompt_tokens},
            {"completion_tokens", s.completion_tokens},
            {"total_tokens", s.prompt_tokens + s.completion_tokens}};
  if (s.cached_tokens > 0) u["prompt_tokens_details"] = {{"cached_tokens", s.cached_tokens}};  // prefix cache
  return u;
}

json chunk_base(const response_meta& meta) {
  return {{"id", meta.id},
          {"object", meta.kind == api_kind::chat ? "chat.completion.chunk" : "text_completion"},
          {"created", meta.created},
          {"model", meta.model}};
}

// One choice of a chunk: a delta for chat, a text for completions.
json chunk_choice(const response_meta& meta, const json& delta_or_text, const json& finish) {
  json c{{"index", 0}, {"logprobs", nullptr}, {"finish_reason", finish}};
  c[meta.kind == api_kind::chat ? "delta" : "text"] = delta_or_text;
  return c;
}

std::string sse(const json& j) { return "data: " + j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n"; }

}  // namespace

std::variant<openai_request, api_error> parse_openai_request(std::string_view body, api_kind kind) {
  if (!dm::json_within_depth(body)) return api_error{400, "request body is nested too deeply", "invalid_request_error", "", ""};
  json b;
  try {
    b = json::parse(body);
  } catch (const json::exception& e) {
    return api_error{400, std::string("request body is not valid JSON: ") + e.what(), "invalid_request_error", "", ""};
  }
  if (!b.is_object()) return api_error{400, "request body must be a JSON object", "invalid_request_error", "", ""};
  try {
    openai_request r;
    if (present(b, "model")) {
      if (!b["model"].is_string()) refuse("model", "'model' must be a string");
      r.model = b["model"].get<std::string>();
    }
    refuse_unsupported(b);
    r.params = read_params(b);
    r.input = kind == api_kind::chat ? read_messages(b) : read_prompt(b);
    if (present(b, "stream")) {
      if (!b["stream"].is_boolean()) refuse("stream", "'stream' must be true or false");
      r.stream = b["stream"].get<bool>();
    }
    if (present(b, "stream_options")) {
      const json& so = b["stream_options"];
      if (!so.is_object()) refuse("stream_options", "'stream_options' must be an object");
      if (present(so, "include_usage")) {
        if (!so["include_usage"].is_boolean()) refuse("stream_options", "'include_usage' must be true or false");
        r.include_usage = so["include_usage"].get<bool>();
      }
    }
    return r;
  } catch (const refusal& e) {
    return e.error;
  } catch (const json::exception& e) {  // not expected: fields are type-checked before use
    return api_error{400, std::string("malformed request: ") + e.what(), "invalid_request_error", "", ""};
  }
}

std::string error_body(const api_error& e) {
  json err{{"message", e.message}, {"type", e.type}, {"param", nullptr}, {"code", nullptr}};
  if (!e.param.empty()) err["param"] = e.param;
  if (!e.code.empty()) err["code"] = e.code;
  return json{{"error", err}}.dump(-1, ' ', false, json::error_handler_t::replace);
}

api_error error_from_protocol(dm::error_code code, const std::string& message) {
  const std::string name(dm::to_string(code));
  switch (code) {
    case dm::error_code::bad_request:
    case dm::error_code::invalid_params: return {400, message, "invalid_request_error", "", name};
    case dm::error_code::too_large: return {413, message, "invalid_request_error", "", name};
    case dm::error_code::overloaded: return {429, message, "rate_limit_error", "", name};
    default: return {500, message, "server_error", "", name};
  }
}

std::string_view openai_finish_reason(dm::finish_reason reason) {
  // OpenAI knows stop and length; a full context is a length limit, and a cancelled request
  // (the client went away) never gets a response.
  return reason == dm::finish_reason::length || reason == dm::finish_reason::context_full ? "length" : "stop";
}

std::string completion_body(const response_meta& meta, const dm::done_reply& done) {
  json choice{{"index", 0}, {"logprobs", nullptr}, {"finish_reason", openai_finish_reason(done.reason)}};
  if (meta.kind == api_kind::chat) choice["message"] = {{"role", "assistant"}, {"content", done.text}};
  else choice["text"] = done.text;
  json body{{"id", meta.id},
            {"object", meta.kind == api_kind::chat ? "chat.completion" : "text_completion"},
            {"created", meta.created},
            {"model", meta.model},
            {"choices", json::array({choice})},
            {"usage", usage_json(done.stats)}};
  return body.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string sse_role_chunk(const response_meta& meta) {
  json j = chunk_base(meta);
  j["choices"] = json::array({chunk_choice(meta, {{"role", "assistant"}, {"content", ""}}, nullptr)});
  return sse(j);
}

std::string sse_text_chunk(const response_meta& meta, const std::string& text) {
  json j = chunk_base(meta);
  const json payload = meta.kind == api_kind::chat ? json{{"content", text}} : json(text);
  j["choices"] = json::array({chunk_choice(meta, payload, nullptr)});
  return sse(j);
}

std::string sse_finish_chunk(const response_meta& meta, dm::finish_reason reason) {
  json j = chunk_base(meta);
  const json payload = meta.kind == api_kind::chat ? json::object() : json("");
  j["choices"] = json::array({chunk_choice(meta, payload, openai_finish_reason(reason))});
  return sse(j);
}

std::string sse_usage_chunk(const response_meta& meta, const dm::request_stats& stats) {
  json j = chunk_base(meta);
  j["choices"] = json::array();
  j["usage"] = usage_json(stats);
  return sse(j);
}

std::string sse_error_chunk(const api_error& error) { return "data: " + error_body(error) + "\n\n"; }

}  // namespace dspark::gateway

// OpenAI API <-> DSpark client protocol: parsing /v1/completions and /v1/chat/completions
// bodies into a submit, and formatting a done reply or stream events as OpenAI responses and
// server-sent-event chunks. Pure functions (no I/O), so each mapping is unit-tested on its own.
//
// Parameters: model (echoed), max_tokens | max_completion_tokens, temperature [0, 2] (default 1,
// as OpenAI), top_p, stop (string or list), seed (>= 0), n (1 only), stream,
// stream_options.include_usage; extensions top_k, min_p, ignore_eos. Features the engine
// lacks (penalties, logprobs, logit_bias, tools, best_of > 1, echo, suffix, JSON response
// formats) are refused with 400 naming the parameter, never silently ignored.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "messages/client_messages.h"

namespace dspark::gateway {

enum class api_kind { completions, chat };

// An OpenAI-style error: the HTTP status and the body's fields.
struct api_error {
  int status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the offending parameter; "" when none
  std::string code;   // a machine-readable code; "" when none
};

struct openai_request {
  std::optional<std::string> model;  // as the client named it
  messages::prompt_input input;
  messages::sampling_params params;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with usage
};

std::variant<openai_request, api_error> parse_openai_request(std::string_view body, api_kind kind);

// {"error": {message, type, param, code}}
std::string error_body(const api_error& error);
// The HTTP error for a protocol error (overloaded -> 429, too_large -> 413, ...).
api_error error_from_protocol(messages::error_code code, const std::string& message);

// What every response of one request shares.
struct response_meta {
  api_kind kind = api_kind::chat;
  std::string id;  // "chatcmpl-..." or "cmpl-..."
  std::string model;
  int64_t created = 0;  // unix seconds
};

std::string_view openai_finish_reason(messages::finish_reason reason);

// The non-streaming response body.
std::string completion_body(const response_meta& meta, const messages::done_reply& done);

// Server-sent events of a streaming response, each "data: {json}\n\n".
std::string sse_role_chunk(const response_meta& meta);  // chat only: delta {role: assistant}
std::string sse_text_chunk(const response_meta& meta, const std::string& text);
std::string sse_finish_chunk(const response_meta& meta, messages::finish_reason reason);
std::string sse_usage_chunk(const response_meta& meta, const messages::request_stats& stats);
std::string sse_error_chunk(const api_error& error);
inline constexpr std::string_view k_sse_done = "data: [DONE]\n\n";

}  // namespace dspark::gateway

// Client protocol v1 (docs/protocol.md): typed messages between clients (SDKs, the HTTP
// gateway) and a DSpark server, and their JSON codec.
//
// encode() never throws (invalid UTF-8 in a text field is replaced with U+FFFD). decode_*()
// never throws either: a frame that is oversized, not JSON, too deeply nested, of an unknown
// version or type, or whose fields have the wrong type or range gives a decode_error with the
// protocol's error code and a message naming the field. Unknown extra fields are ignored, so a
// newer peer may add optional fields without breaking v1 readers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace dspark::messages {

inline constexpr int k_protocol_version = 1;
inline constexpr size_t k_max_id_bytes = 128;
inline constexpr size_t k_default_max_message_bytes = size_t{1} << 20;
inline constexpr size_t k_max_stop_strings = 8;
inline constexpr size_t k_max_stop_bytes = 256;     // per stop string
inline constexpr int64_t k_max_max_tokens = 1 << 20;  // upper bound of params.max_tokens
inline constexpr int k_max_json_depth = 32;         // deeper frames are refused unparsed

// ---- errors -------------------------------------------------------------------------------

enum class error_code { bad_request, invalid_params, too_large, overloaded, unknown_id, duplicate_id, internal };
std::string_view to_string(error_code code);
std::optional<error_code> parse_error_code(std::string_view s);

// Why a frame could not be decoded. `id` is set when the frame named a request id that could be
// read, so the reply can be attributed to that request.
struct decode_error {
  error_code code = error_code::bad_request;
  std::string message;
  std::optional<std::string> id;
};

// The value, or why there is none.
template <class T>
class decode_result {
 public:
  decode_result(T value) : v_(std::move(value)) {}
  decode_result(decode_error error) : v_(std::move(error)) {}
  bool ok() const { return v_.index() == 0; }
  const T& value() const { return std::get<0>(v_); }
  T& value() { return std::get<0>(v_); }
  const decode_error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, decode_error> v_;
};

// ---- client -> server ---------------------------------------------------------------------

// Sampling and stopping; defaults are the protocol's defaults (and mean "off" where a filter).
struct sampling_params {
  int64_t max_tokens = 256;           // [1, k_max_max_tokens]
  double temperature = 0.0;           // [0, 100]; 0 = greedy
  int64_t top_k = 0;                  // >= 0; 0 = off
  double top_p = 1.0;                 // (0, 1]; 1 = off
  double min_p = 0.0;                 // [0, 1); 0 = off
  std::optional<uint64_t> seed;       // absent: the server picks one
  std::vector<std::string> stop;      // at most k_max_stop_strings, each 1..k_max_stop_bytes
  bool ignore_eos = false;
  bool operator==(const sampling_params&) const = default;
};

struct chat_message {
  std::string role;     // "system", "user" or "assistant"
  std::string content;
  bool operator==(const chat_message&) const = default;
};

// Exactly one kind of input per submit.
struct text_prompt {
  std::string text;  // raw text, no chat template
  bool operator==(const text_prompt&) const = default;
};
struct chat_prompt {
  std::vector<chat_message> messages;  // non-empty; the model's chat template is applied
  bool operator==(const chat_prompt&) const = default;
};
struct token_prompt {
  std::vector<int32_t> tokens;  // non-empty, each >= 0
  bool operator==(const token_prompt&) const = default;
};
using prompt_input = std::variant<text_prompt, chat_prompt, token_prompt>;

struct submit_request {
  std::string id;  // 1..k_max_id_bytes bytes
  prompt_input input;
  sampling_params params;
  bool stream = true;
  bool operator==(const submit_request&) const = default;
};
struct cancel_request {
  std::string id;
  bool operator==(const cancel_request&) const = default;
};
struct metrics_request {
  bool operator==(const metrics_request&) const = default;
};
struct models_request {
  bool operator==(const models_request&) const = default;
};
struct health_request {
  bool operator==(const health_request&) const = default;
};

using client_message = std::variant<submit_request, cancel_request, metrics_request, models_request, health_request>;

// ---- server -> client ---------------------------------------------------------------------

struct accepted_reply {
  std::string id;
  int64_t prompt_tokens = 0;
  bool operator==(const accepted_reply&) const = default;
};

// Tokens committed in one step (only for stream: true).
struct tokens_reply {
  std::string id;
  std::vector<int32_t> token_ids;
  std::string text;  // the UTF-8 text they complete; may be empty mid-character
  bool operator==(const tokens_reply&) const = default;
};

enum class finish_reason { stop, length, cancelled, context_full };
std::string_view to_string(finish_reason reason);
std::optional<finish_reason> parse_finish_reason(std::string_view s);

struct request_stats {
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double ttft_s = 0;            // time to first token
  double tpot_s = 0;            // time per output token after the first
  double tokens_per_s = 0;
  double acceptance_length = 0; // mean tokens committed per verify step
  int64_t verify_steps = 0;
  int64_t draft_tokens_proposed = 0;
  int64_t draft_tokens_accepted = 0;
  int64_t cached_tokens = 0;    // prompt tokens served by the prefix cache (optional on the wire)
  bool operator==(const request_stats&) const = default;
};

struct done_reply {
  std::string id;
  std::string text;  // the whole completion
  std::vector<int32_t> token_ids;
  finish_reason reason = finish_reason::stop;
  request_stats stats;
  bool operator==(const done_reply&) const = default;
};

struct error_reply {
  std::optional<std::string> id;  // absent when the message could not be attributed
  error_code code = error_code::internal;
  std::string message;
  bool operator==(const error_reply&) const = default;
};

struct metrics_reply {
  std::string text;  // Prometheus exposition format
  bool operator==(const metrics_reply&) const = default;
};

struct model_info {
  std::string id;
  int64_t n_ctx = 0;
  std::string draft;  // the drafter kind; "" for plain decoding
  bool operator==(const model_info&) const = default;
};
struct models_reply {
  std::vector<model_info> models;
  bool operator==(const models_reply&) const = default;
};

enum class health_status { ok, draining };
std::string_view to_string(health_status status);
struct health_reply {
  health_status status = health_status::ok;
  int64_t active_requests = 0;
  int64_t queued_requests = 0;
  bool operator==(const health_reply&) const = default;
};

using server_message = std::variant<accepted_reply, tokens_reply, done_reply, error_reply, metrics_reply,
                                    models_reply, health_reply>;

// ---- codec --------------------------------------------------------------------------------

// One frame of compact JSON with "v" and "type".
std::string encode(const client_message& message);
std::string encode(const server_message& message);

// Parses and validates one frame. Frames longer than max_bytes give too_large without parsing;
// invalid params give invalid_params with the field's name; everything else malformed gives
// bad_request.
decode_result<client_message> decode_client_message(std::string_view frame,
                                                    size_t max_bytes = k_default_max_message_bytes);
decode_result<server_message> decode_server_message(std::string_view frame,
                                                    size_t max_bytes = k_default_max_message_bytes);

// Validates params alone (the gateway checks OpenAI parameters with the same rules); nullopt
// when valid, else the invalid_params error naming the field.
std::optional<decode_error> validate_params(const sampling_params& params);

// Whether no bracket nesting in `text` (outside strings) exceeds max_depth: a linear scan to
// run before parsing untrusted JSON, so hostile nesting costs no parser work.
bool json_within_depth(std::string_view text, int max_depth = k_max_json_depth);

// The error reply for a decode failure (the server's answer to a bad frame).
error_reply to_error_reply(const decode_error& error);

}  // namespace dspark::messages

// dspark_client: the C++ client of a DSpark server over ZeroMQ (protocol: docs/protocol.md;
// usage: docs/sdk.md).
//
//   dspark::client::client c({.endpoint = "tcp://127.0.0.1:5555"});
//   dspark::client::request r = c.submit(dspark::client::chat("Hi"), {.max_tokens = 32});
//   for (;;) {                                    // or just r.wait() for the final done_reply
//     auto ev = r.next();
//     if (auto* t = std::get_if<dspark::messages::tokens_reply>(&ev)) std::cout << t->text;
//     else if (!std::holds_alternative<dspark::messages::accepted_reply>(ev)) break;  // done/error
//   }
//
// One background I/O thread owns the socket; every public method is thread-safe, and many
// requests may stream at once. Errors are thrown as client_error with a kind and, for errors
// the server sent, its protocol code; nothing blocks longer than the configured timeout.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <variant>

#include "messages/client_messages.h"

namespace zmq {
class context_t;
}

namespace dspark::client {

namespace msg = dspark::messages;

struct client_options {
  std::string endpoint = "tcp://127.0.0.1:5555";
  // The server's CURVE public key (40-char Z85) to encrypt a tcp connection; empty: plain.
  std::string server_public_key;
  // How long a call waits for its next reply (a streaming request: for each event).
  std::chrono::milliseconds timeout{30000};
  // Frames larger than this are refused here, before sending (the server's limit).
  size_t max_message_bytes = msg::k_default_max_message_bytes;
  // Share a context to reach inproc:// endpoints of a server in this process; null: own one.
  zmq::context_t* context = nullptr;
};

enum class error_kind {
  server,     // the server answered `error` (see code)
  timeout,    // no reply within the timeout
  invalid,    // the request was refused before sending (too large, invalid params)
  closed,     // the client shut down while the request was live
};

struct client_error : std::runtime_error {
  client_error(error_kind k, msg::error_code c, const std::string& what)
      : std::runtime_error(what), kind(k), code(c) {}
  error_kind kind;
  msg::error_code code;  // the protocol's code (for local errors the closest one)
};

// What a streaming request yields, in order: accepted, tokens..., then done or error.
using stream_event = std::variant<msg::accepted_reply, msg::tokens_reply, msg::done_reply, msg::error_reply>;
using event_callback = std::function<void(const stream_event&)>;

// Conveniences for building the input of a submit.
msg::prompt_input chat(std::string user_message, std::string system_message = "");
msg::prompt_input text(std::string prompt);

class client;
struct request_state;

// A live request. Destroying it before its end cancels it on the server.
class request {
 public:
  request(request&&) noexcept;
  request& operator=(request&&) noexcept;
  ~request();

  const std::string& id() const;
  // The next event; throws client_error(timeout) when none arrives in time. After done or
  // error, further calls throw client_error(closed).
  stream_event next();
  // Like next(), but waits at most `wait` and gives nullopt when nothing arrived (lets a caller
  // check other things, such as whether its own HTTP client is still connected, meanwhile).
  std::optional<stream_event> try_next(std::chrono::milliseconds wait);
  // Waits for the end: the done_reply, or client_error(server) for an error reply.
  msg::done_reply wait();
  // Asks the server to end the request; it ends with done(finish_reason cancelled).
  void cancel();
  bool finished() const;

 private:
  friend class client;
  request(std::shared_ptr<request_state> state, client* owner);
  std::shared_ptr<request_state> state_;
  client* owner_;
};

class client {
 public:
  explicit client(client_options options);
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  // Sends a submit. An empty id gets a unique one. With a callback, events are passed to it on
  // the I/O thread (it must not block) instead of being queued for next(). Throws
  // client_error(invalid) for invalid params or a frame over max_message_bytes.
  request submit(msg::prompt_input input, msg::sampling_params params = {}, bool stream = true,
                 event_callback callback = {}, std::string id = "");

  std::string metrics();              // Prometheus text
  msg::models_reply models();
  msg::health_reply health();

  const client_options& options() const;

 private:
  friend class request;
  struct impl;
  void send_cancel(const std::string& id);
  std::unique_ptr<impl> impl_;
};

}  // namespace dspark::client

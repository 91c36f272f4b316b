// The OpenAI-compatible HTTP gateway: /v1/completions, /v1/chat/completions (JSON or SSE
// streaming), /v1/models, /health and /metrics, served with cpp-httplib and forwarded to a
// DSpark server through the C++ client SDK (docs/sdk.md, "Gateway").
//
// `dspark gateway` runs it against a server's ZeroMQ endpoint; `dspark serve --http` can run it
// in-process against an inproc:// endpoint by passing the server's zmq context.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <string>

namespace zmq {
class context_t;
}

namespace dspark::gateway {

struct gateway_options {
  std::string host = "127.0.0.1";  // loopback unless told otherwise
  int port = 8000;                 // 0: any free port (reported through on_listening)
  std::string server_endpoint = "tcp://127.0.0.1:5555";
  std::string server_public_key;   // CURVE key of the server (Z85), empty for plain
  zmq::context_t* context = nullptr;  // the server's context, for inproc:// endpoints
  std::string api_key;             // when set, /v1/* and /metrics need "Authorization: Bearer KEY"
  std::string model_name;          // the model name clients see; empty: the server's model id
  size_t max_body_bytes = size_t{1} << 20;  // larger bodies get 413
  size_t max_connections = 128;    // HTTP worker threads (one per open connection)
  std::chrono::milliseconds server_timeout{60000};  // longest wait for the server's next reply
  std::function<void(int port)> on_listening;       // called once bound, with the port
};

// Serves until `stop` becomes true, then stops accepting, lets in-flight responses finish and
// returns 0; returns 1 (message on stderr) when it cannot bind or connect.
int run_gateway(const gateway_options& options, std::atomic<bool>& stop);

}  // namespace dspark::gateway

// `dspark gateway`: the OpenAI-compatible HTTP gateway in front of a running server
// (`dspark serve --zmq ...` or `dspark intake`). SIGINT/SIGTERM stop it after in-flight
// responses finish.
//
//   dspark gateway --listen 127.0.0.1:8000 --server tcp://127.0.0.1:5555 [--api-key K]
//                  [--model-name N] [--server-key Z85] [--max-body-bytes N] [--max-connections N]
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include "services/dspark/cli_args.h"
#include "services/dspark/commands.h"
#include "services/gateway/gateway.h"

namespace dspark::cli {

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

const std::vector<option_spec>& gateway_options_spec() {
  static const std::vector<option_spec> k_specs = {
      {"listen", true, false, "--listen HOST:PORT   where to serve HTTP (default 127.0.0.1:8000)"},
      {"server", true, false, "--server ENDPOINT    the server's ZeroMQ endpoint (default tcp://127.0.0.1:5555)"},
      {"server-key", true, false, "--server-key Z85     the server's CURVE public key (encrypts tcp)"},
      {"api-key", true, false, "--api-key KEY        require Authorization: Bearer KEY (also $DSPARK_API_KEY)"},
      {"model-name", true, false, "--model-name NAME    the model name clients see (default: the server's)"},
      {"max-body-bytes", true, false, "--max-body-bytes N   larger request bodies get 413 (default 1048576)"},
      {"max-connections", true, false, "--max-connections N  concurrent HTTP connections (default 128)"},
      {"help", false, false, "--help               this message"}};
  return k_specs;
}

void print_help(std::FILE* out) {
  std::fprintf(out, "usage: dspark gateway [options]\n\nOpenAI-compatible HTTP API in front of a DSpark server.\n\n%s",
               format_options(gateway_options_spec()).c_str());
}

gateway::gateway_options read_options(const parsed_args& a) {
  gateway::gateway_options o;
  const std::string listen = a.get("listen").value_or("127.0.0.1:8000");
  const size_t colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) throw usage_error("--listen must be HOST:PORT, got '" + listen + "'");
  o.host = listen.substr(0, colon);
  char* end = nullptr;
  const long port = std::strtol(listen.c_str() + colon + 1, &end, 10);
  if (*end != '\0' || port < 1 || port > 65535) throw usage_error("--listen port must be in [1, 65535]");
  o.port = static_cast<int>(port);
  o.server_endpoint = a.get("server").value_or(o.server_endpoint);
  o.server_public_key = a.get("server-key").value_or("");
  const char* env_key = std::getenv("DSPARK_API_KEY");
  o.api_key = a.get("api-key").value_or(env_key ? env_key : "");
  o.model_name = a.get("model-name").value_or("");
  o.max_body_bytes = static_cast<size_t>(a.get_int("max-body-bytes", 1 << 20, 1024, int64_t{1} << 30));
  o.max_connections = static_cast<size_t>(a.get_int("max-connections", 128, 1, 4096));
  return o;
}

}  // namespace

int gateway_command(std::span<const std::string> args) {
  try {
    const parsed_args a = parse_args(args, gateway_options_spec());
    if (a.has("help")) {
      print_help(stdout);
      return 0;
    }
    gateway::gateway_options o = read_options(a);
    o.on_listening = [&o](int port) {
      std::fprintf(stderr, "dspark gateway: listening on http://%s:%d -> %s\n", o.host.c_str(), port,
                   o.server_endpoint.c_str());
    };
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    return gateway::run_gateway(o, g_stop);
  } catch (const usage_error& e) {
    std::fprintf(stderr, "dspark gateway: %s\n\n", e.what());
    print_help(stderr);
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dspark gateway: error: %s\n", e.what());
    return 1;
  }
}

}  // namespace dspark::cli

// `dspark serve|verifier|drafter|intake`: the server's processes (docs/actors.md).
//
//   dspark serve --model PATH [--draft KIND] [--gamma G] [--policy fixed|threshold|scheduled|async[:LAG]]
//                [--zmq ENDPOINT] [--http HOST:PORT]
//                [--config FILE] [--device cpu|cuda] ...
//   dspark verifier --config FILE [overrides]   binds engine_endpoint and drafter_endpoint
//   dspark drafter  --config FILE --draft KIND  connects to drafter_endpoint (hot-swappable)
//   dspark intake   --config FILE [--zmq EP]    binds client_endpoint, connects engine_endpoint
//
// SIGINT/SIGTERM: the intake stops admitting, in-flight requests finish (drain), exit 0.
// Backends and drafters come from the same factories as `dspark generate` (backend_factory.h,
// spec_cli.h).
#include "services/dspark/serve_command.h"

#include <signal.h>

#include <atomic>
#include <cstdio>
#include <thread>

#include "actors/server.h"
#include "common/error.h"
#include "config/server_config.h"
#include "engine/model.h"
#include "engine/spec/policy_factory.h"
#include "services/dspark/backend_factory.h"
#include "services/dspark/cli_args.h"
#include "services/dspark/spec_cli.h"
#include "services/gateway/gateway.h"

#include <zmq.h>

namespace dspark::cli {

namespace {

const std::vector<option_spec>& serve_options() {
  static const std::vector<option_spec> k = {
      {"config", true, false, "FILE  JSON server config (config/*.json); options below override it"},
      {"model", true, false, "PATH  .gguf file or Hugging Face folder"},
      {"draft", true, false, "none|ngram|layerskip:K  drafter kind (serve: in-process; drafter: this service's)"},
      {"gamma", true, false, "G  drafts verified per step, [1, 64]"},
      {"draft-skip", true, false, "off|auto[:COST]  skip drafting where it does not pay (drafter role; docs/scheduler.md)"},
      {"policy", true, false,
       "fixed|threshold|scheduled|async[:LAG]  drafts verified per step (docs/scheduler.md; default fixed)"},
      {"threshold", true, false, "C  threshold policy: cut chains where cumulative confidence < C, [0, 1]"},
      {"sps-profile", true, false, "FILE  step-time profile cache for scheduled/async (default ~/.cache/dspark/)"},
      {"zmq", true, false, "ENDPOINT  client ROUTER (tcp://HOST:PORT, ipc://PATH, inproc://NAME)"},
      {"http", true, false, "HOST:PORT  also serve the OpenAI HTTP gateway (serve only)"},
      {"api-key", true, false, "KEY  HTTP API key for --http (default: $DSPARK_API_KEY)"},
      {"engine", true, false, "ENDPOINT  intake <-> verifier link"},
      {"drafter-endpoint", true, false, "ENDPOINT  verifier <-> drafter link (\"\" = no remote drafters)"},
      {"drafter-timeout-ms", true, false, "MS  deadline of one remote propose"},
      {"max-requests", true, false, "N  requests decoded together"},
      {"max-queued", true, false, "N  live requests before `overloaded`"},
      {"ctx", true, false, "N  context length per request"},
      {"kv-blocks", true, false, "N  KV block budget (0 = max-requests full contexts)"},
      {"prefix-cache", true, false, "on|off  reuse the KV blocks of shared prompt prefixes (default on)"},
      {"pipeline", true, false, "on|off  draft one group of requests while the target verifies the other (default off)"},
      {"spec-gate", true, false, "off|auto[:BUDGET]|N  no drafting where it does not pay: auto measured (reprobes cost at most BUDGET of throughput, default 0.01), N a batch limit (default off; docs/scheduler.md)"},
      {"threads", true, false, "N  CPU threads (default: all cores)"},
      {"precision", true, false, "q8|f32  CPU activation precision"},
      device_option_spec(),
      {"help", false, false, "this message"},
  };
  return k;
}

// The config file, then every option given on the command line.
config::server_config read_config(const parsed_args& a) {
  config::server_config c;
  if (auto f = a.get("config")) c = config::load_server_config(*f);
  if (auto v = a.get("model")) c.model = *v;
  if (auto v = a.get("draft")) c.draft = *v;
  if (auto v = a.get("policy")) {
    try {
      parse_policy_name(*v);
    } catch (const invalid_argument_error& e) {
      throw usage_error(std::string("--") + e.what());
    }
    c.policy = *v;
  }
  if (auto v = a.get("sps-profile")) c.sps_profile = *v;
  if (auto v = a.get("draft-skip")) c.draft_skip = *v;
  if (auto v = a.get("spec-gate")) c.spec_gate = *v;
  c.threshold = a.get_double("threshold", c.threshold);
  if (auto v = a.get("zmq")) c.client_endpoint = *v;
  if (auto v = a.get("http")) c.http = *v;
  if (auto v = a.get("engine")) c.engine_endpoint = *v;
  if (auto v = a.get("drafter-endpoint")) c.drafter_endpoint = *v;
  if (auto v = a.get("precision")) c.precision = *v;
  if (auto v = a.get("device")) c.device = *v;
  if (const char* k = std::getenv("DSPARK_CURVE_SECRET_KEY")) c.curve_secret_key = k;
  if (const char* k = std::getenv("DSPARK_LINK_CURVE_SECRET_KEY")) c.link_curve_secret_key = k;
  c.gamma = static_cast<int32_t>(a.get_int("gamma", c.gamma, 1, 64));
  c.drafter_timeout_ms = static_cast<int32_t>(a.get_int("drafter-timeout-ms", c.drafter_timeout_ms, 1, 600000));
  c.max_requests = static_cast<int32_t>(a.get_int("max-requests", c.max_requests, 1, 4096));
  c.max_queued = static_cast<int32_t>(a.get_int("max-queued", c.max_queued, 1, 1 << 20));
  c.n_ctx = static_cast<int32_t>(a.get_int("ctx", c.n_ctx, 16, 1 << 20));
  c.kv_blocks = static_cast<int32_t>(a.get_int("kv-blocks", c.kv_blocks, 0, 1 << 24));
  if (auto v = a.get("prefix-cache")) {
    if (*v != "on" && *v != "off") throw usage_error("--prefix-cache must be on or off, got '" + *v + "'");
    c.prefix_cache = *v == "on";
  }
  if (auto v = a.get("pipeline")) {
    if (*v != "on" && *v != "off") throw usage_error("--pipeline must be on or off, got '" + *v + "'");
    c.pipeline = *v == "on";
  }
  c.threads = static_cast<int32_t>(a.get_int("threads", c.threads, 0, 1024));
  if (c.model.empty()) throw usage_error("--model (or \"model\" in --config) is required");
  config::validate_server_config(c);
  return c;
}

backend_choice choice_for(const config::server_config& c, int32_t n_seq_max) {
  backend_choice bc;
  bc.device = c.device == "cuda" ? device_kind::cuda : device_kind::cpu;
  if (bc.device == device_kind::cuda && !cuda_available())
    throw std::runtime_error("--device cuda: this binary or machine has no CUDA device");
  bc.cpu.n_threads = c.threads;
  bc.cpu.n_seq_max = n_seq_max;
  bc.cpu.n_ctx = c.n_ctx;
  bc.cpu.kv_block_size = c.kv_block_size;
  bc.cpu.kv_blocks = c.kv_blocks;
  bc.cpu.precision = c.precision == "f32" ? matmul_precision::f32_activations : matmul_precision::q8_activations;
  return bc;
}

// The CLI's own factories: backend_factory for the target, spec_cli's drafter construction.
actors::server_factories cli_factories() {
  actors::server_factories f;
  f.make_backend = [](const model& m, const config::server_config& c) {
    return make_backend(choice_for(c, c.max_requests), m.config(), m.weights());
  };
  f.make_drafter = [](const model& m, const config::server_config& c) -> std::unique_ptr<drafter> {
    std::vector<std::string> args = {"--draft", c.draft, "--gamma", std::to_string(c.gamma),
                                     "--ngram-min", std::to_string(c.ngram_min),
                                     "--ngram-max", std::to_string(c.ngram_max)};
    if (!c.draft_skip.empty()) args.insert(args.end(), {"--draft-skip", c.draft_skip});
    spec_setup s = make_spec_setup(parse_args(args, spec_option_specs()), m, choice_for(c, c.max_requests),
                                   c.max_requests);
    return std::move(s.d);
  };
  // The profile cache key names the device as `dspark generate --policy` does (one cache file).
  f.make_policy = [](const model& m, const config::server_config& c, backend& target) {
    return make_policy(c.policy, c.gamma, c.threshold, m, choice_for(c, c.max_requests), c.max_requests, &target,
                       c.sps_profile.empty() ? std::nullopt : std::optional<std::string>(c.sps_profile));
  };
  return f;
}

// Blocks SIGINT/SIGTERM in this thread (and so in every thread started after), for sigwait.
sigset_t block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

int run_roles(const char* name, std::span<const std::string> args, actors::server_roles roles) {
  try {
    const parsed_args a = parse_args(args, serve_options());
    if (a.has("help")) {
      std::printf("usage: dspark %s [options]\n\noptions:\n%s", name, format_options(serve_options()).c_str());
      return 0;
    }
    config::server_config c = read_config(a);
    if (roles.drafter && !roles.verifier && (c.draft == "none" || c.drafter_endpoint.empty()))
      throw usage_error("dspark drafter needs --draft KIND and a drafter endpoint");
    if (!roles.intake) c.http.clear();
    const sigset_t sigs = block_stop_signals();
    actors::server srv(c, roles, cli_factories());
    std::fprintf(stderr, "dspark %s: ready", name);
    if (roles.intake) std::fprintf(stderr, " | clients %s", srv.client_endpoint().c_str());
    if (roles.verifier) std::fprintf(stderr, " | engine %s | drafters %s", srv.engine_endpoint().c_str(),
                                     srv.drafter_endpoint().empty() ? "(none)" : srv.drafter_endpoint().c_str());
    if (roles.drafter && c.draft != "none") std::fprintf(stderr, " | drafter %s", c.draft.c_str());
    std::fprintf(stderr, "\n");
    std::string curve_public;
    if (!c.curve_secret_key.empty() && roles.intake) {
      char pub[41] = {};
      if (zmq_curve_public(pub, c.curve_secret_key.c_str()) != 0) throw usage_error("curve_secret_key is not a valid Z85 key");
      curve_public = pub;
      std::fprintf(stderr, "dspark %s: CURVE on the client endpoint, server public key %s\n", name, pub);
    }

    std::atomic<bool> http_stop{false};
    std::thread http;
    int http_rc = 0;
    if (!c.http.empty()) {
      const auto colon = c.http.rfind(':');
      if (colon == std::string::npos) throw usage_error("--http needs HOST:PORT, got '" + c.http + "'");
      gateway::gateway_options g;
      g.host = c.http.substr(0, colon);
      g.port = std::stoi(c.http.substr(colon + 1));
      g.server_endpoint = srv.client_endpoint();
      g.context = &srv.zmq_context();
      g.server_public_key = curve_public;
      if (auto k = a.get("api-key")) g.api_key = *k;
      else if (const char* e = std::getenv("DSPARK_API_KEY")) g.api_key = e;
      http = std::thread([g, &http_rc, &http_stop] { http_rc = gateway::run_gateway(g, http_stop); });
    }
    int sig = 0;
    sigwait(&sigs, &sig);
    std::fprintf(stderr, "dspark %s: %s, draining\n", name, sig == SIGINT ? "SIGINT" : "SIGTERM");
    if (http.joinable()) {
      http_stop = true;
      http.join();
    }
    const bool drained = srv.drain(std::chrono::minutes(10));
    std::fprintf(stderr, "dspark %s: %s\n", name, drained ? "drained, exiting" : "drain timed out, exiting");
    return http_rc != 0 ? 1 : 0;
  } catch (const usage_error& e) {
    std::fprintf(stderr, "dspark %s: %s\n\nusage: dspark %s [options]\n%s", name, e.what(), name,
                 format_options(serve_options()).c_str());
    return 2;
  } catch (const invalid_argument_error& e) {
    std::fprintf(stderr, "dspark %s: invalid argument: %s\n", name, e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dspark %s: error: %s\n", name, e.what());
    return 1;
  }
}

}  // namespace

int serve_command(std::span<const std::string> args) {
  return run_roles("serve", args, actors::server_roles{true, true, true});
}
int verifier_command(std::span<const std::string> args) {
  return run_roles("verifier", args, actors::server_roles{false, true, false});
}
int drafter_command(std::span<const std::string> args) {
  return run_roles("drafter", args, actors::server_roles{false, false, true});
}
int intake_command(std::span<const std::string> args) {
  return run_roles("intake", args, actors::server_roles{true, false, false});
}

}  // namespace dspark::cli

// One process's share of a DSpark server: any of the intake, verifier and drafter roles, with
// their actors, sockets and engine objects, wired by a server_config (config/server_config.h).
//
//   dspark serve     = all roles in one process (engine/drafter links over inproc)
//   dspark verifier  = verifier only (binds engine_endpoint and drafter_endpoint)
//   dspark drafter   = drafter only (connects to drafter_endpoint)
//   dspark intake    = intake only (binds client_endpoint, connects to engine_endpoint)
//
//   clients --DEALER--> [client ROUTER] intake --DEALER--> [engine ROUTER] verifier
//                                                   [drafter ROUTER] verifier <--DEALER-- drafter(s)
//
// Only the endpoint strings differ between one process and several; the code path is the same.
// The engine objects come from factories the caller passes (the CLI's backend and drafter
// factories), so this library depends on the backend interface only.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "config/server_config.h"
#include "engine/backend.h"
#include "engine/spec/policy.h"
#include "models/drafters/drafter.h"

namespace dspark {
class model;
}

namespace dspark::actors {

struct server_roles {
  bool intake = true;
  bool verifier = true;
  bool drafter = false;  // an in-process drafter service of kind cfg.draft
};

struct server_factories {
  // The target backend with n_seq_max sequences (the CLI: backend_factory's make_backend).
  std::function<std::unique_ptr<backend>(const model&, const config::server_config&)> make_backend;
  // A drafter of cfg.draft for max_slots slots (the CLI: spec_cli's drafter construction).
  std::function<std::unique_ptr<drafter>(const model&, const config::server_config&)> make_drafter;
  // The step policy for the verifier's target backend (scheduled/async profile SPS(R, B) on it).
  // Default: cfg.policy by name (engine/spec/policy_factory.h), the profile cached under a key
  // naming cfg.device, threads and precision; the CLI passes its own to share `dspark generate`'s
  // cache key.
  std::function<std::unique_ptr<spec_policy>(const model&, const config::server_config&, backend& target)> make_policy;
};

class server {
 public:
  // Loads the model (once, shared by the roles), builds the engine objects and spawns the
  // actors. Throws (format_error, invalid_argument_error, std::runtime_error naming an
  // endpoint) when any of that fails; nothing keeps running then.
  server(const config::server_config& cfg, const server_roles& roles, const server_factories& f);
  ~server();  // stops the actors (in-flight requests are dropped: drain() first to finish them)
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  // Bound endpoints, wildcard tcp ports resolved ("" for roles not run here).
  const std::string& client_endpoint() const;
  const std::string& engine_endpoint() const;
  const std::string& drafter_endpoint() const;

  // Graceful shutdown of the intake: stop admitting, wait for in-flight requests. True when they
  // all finished within `timeout` (true at once without an intake role).
  bool drain(std::chrono::milliseconds timeout);
  // Stops this process's drafter role now (tests: a drafter going away); no-op without one.
  void stop_drafter();
  // Spawns a new scheduler actor over the same kv_manager and hands it to the verifier, which
  // moves the waiting requests to it in order and stops the old one; no-op without a verifier.
  void replace_scheduler();
  const model& loaded_model() const;
  // The ZeroMQ context of this process's sockets (in-process clients of inproc endpoints).
  zmq::context_t& zmq_context();

 private:
  struct impl;
  std::unique_ptr<impl> p_;
};

}  // namespace dspark::actors

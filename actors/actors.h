// Spawning the server's actors. Each takes ownership of its channels and core; the caller keeps
// what the cores point to (model, backend, drafter) alive until the actor terminated.
#pragma once

#include <memory>

#include "actors/actor_protocols.h"
#include "actors/drafter_core.h"
#include "actors/intake_core.h"
#include "actors/verifier_core.h"
#include "actors/zmq_channel.h"

namespace dspark::actors {

class remote_drafter;

// The verifier: `engine` is its bound ROUTER (intakes connect), `rd` the remote drafter the core
// uses (or null). Spawned detached: the backend (and its CUDA streams) stays on one thread.
verifier_actor spawn_verifier(caf::actor_system& sys, std::unique_ptr<zmq_channel> engine,
                              std::function<std::unique_ptr<verifier_core>(verifier_core::sink_fn)> make_core,
                              remote_drafter* rd);

// The intake: `clients` its bound ROUTER, `engine` its DEALER to the verifier.
intake_actor spawn_intake(caf::actor_system& sys, std::unique_ptr<zmq_channel> clients,
                          std::unique_ptr<zmq_channel> engine, const tokenizer* tok, const intake_options& opt);

// A drafter service: `link` its DEALER to the verifier's drafter endpoint. Sends hello at once.
drafter_actor spawn_drafter(caf::actor_system& sys, std::unique_ptr<zmq_channel> link,
                            std::function<std::unique_ptr<drafter_core>(drafter_core::send_fn)> make_core);

}  // namespace dspark::actors

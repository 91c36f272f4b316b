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

// kv_manager with sizes `p` (invalid sizes throw invalid_argument_error before spawning).
kv_manager_actor spawn_kv_manager(caf::actor_system& sys, const kv_manager_params& p);

// The scheduler: a FIFO queue of at most max_waiting requests, reserving through `kv`; `shape`
// is kv's sizes (the too-large check).
scheduler_actor spawn_scheduler(caf::actor_system& sys, const kv_manager_params& shape, int32_t max_waiting,
                                kv_manager_actor kv);

// The verifier: `engine` is its bound ROUTER (intakes connect), `rd` the remote drafter the core
// uses (or null); admission goes through `sched` and `kv` (make_core receives the port that
// talks to them). Spawned detached: the backend (and its CUDA streams) stays on one thread.
using make_verifier_core_fn =
    std::function<std::unique_ptr<verifier_core>(verifier_core::sink_fn, std::unique_ptr<admission_port>)>;
verifier_actor spawn_verifier(caf::actor_system& sys, std::unique_ptr<zmq_channel> engine, make_verifier_core_fn make_core,
                              remote_drafter* rd, scheduler_actor sched, kv_manager_actor kv);

// The intake: `clients` its bound ROUTER, `engine` its DEALER to the verifier.
intake_actor spawn_intake(caf::actor_system& sys, std::unique_ptr<zmq_channel> clients,
                          std::unique_ptr<zmq_channel> engine, const tokenizer* tok, const intake_options& opt);

// A drafter service: `link` its DEALER to the verifier's drafter endpoint. Sends hello at once.
drafter_actor spawn_drafter(caf::actor_system& sys, std::unique_ptr<zmq_channel> link,
                            std::function<std::unique_ptr<drafter_core>(drafter_core::send_fn)> make_core);

}  // namespace dspark::actors

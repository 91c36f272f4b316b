// The CAF message interfaces of the server's actors, one typed_actor alias per actor (CAF 0.17
// syntax). Cross-actor data (requests, tokens, drafts) travels as encoded frames over ZeroMQ
// (zmq_channel.h), so the same bytes serve inproc, ipc and tcp; the CAF messages below are only
// each actor's mailbox interface: frames its channels received, losses, and control.
#pragma once

#include <string>
#include <vector>

#include <caf/all.hpp>

namespace dspark::actors {

using client_atom = caf::atom_constant<caf::atom("client")>;   // a frame from a client socket
using engine_atom = caf::atom_constant<caf::atom("engine")>;   // a frame on the intake<->verifier link
using draft_atom = caf::atom_constant<caf::atom("draft")>;     // a frame on the verifier<->drafter link
using lost_atom = caf::atom_constant<caf::atom("lost")>;       // a peer of a ROUTER went away
using step_atom = caf::atom_constant<caf::atom("step")>;       // the verifier's next batch step
using drain_atom = caf::atom_constant<caf::atom("drain")>;     // graceful shutdown: stop admitting
using link_atom = caf::atom_constant<caf::atom("link")>;       // the connection to the verifier up/down

// Owns the client ROUTER and the DEALER to the verifier; replies to drain once every in-flight
// request finished.
using intake_actor = caf::typed_actor<caf::reacts_to<client_atom, std::vector<std::string>>,
                                      caf::reacts_to<engine_atom, std::vector<std::string>>,
                                      caf::reacts_to<lost_atom, std::string>,
                                      caf::reacts_to<link_atom, bool>,
                                      caf::replies_to<drain_atom>::with<bool>>;

// Owns the target backend, the decoder (scheduler, kv_manager, remote drafter) and the engine
// ROUTER; steps while requests run.
using verifier_actor = caf::typed_actor<caf::reacts_to<engine_atom, std::vector<std::string>>,
                                        caf::reacts_to<lost_atom, std::string>,
                                        caf::reacts_to<step_atom>,
                                        caf::reacts_to<draft_atom>>;  // drafter registered or lost

// Owns one drafter object and a DEALER to the verifier's drafter endpoint.
using drafter_actor = caf::typed_actor<caf::reacts_to<draft_atom, std::vector<std::string>>,
                                       caf::reacts_to<link_atom, bool>>;

}  // namespace dspark::actors

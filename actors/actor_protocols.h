// The CAF message interfaces of the server's actors, one typed_actor alias per actor (CAF 0.17
// syntax). Cross-actor data (requests, tokens, drafts) travels as encoded frames over ZeroMQ
// (zmq_channel.h), so the same bytes serve inproc, ipc and tcp; the CAF messages below are only
// each actor's mailbox interface: frames its channels received, losses, and control.
//
// The exception is admission (scheduler and kv_manager actors, beside the verifier in its
// process): their messages carry C++ objects (waiting requests with their prompts) by move,
// local-only (CAF_ALLOW_UNSAFE_MESSAGE_TYPE below, never serialised); docs/actors.md says why
// they are not on ZeroMQ.
#pragma once

#include <string>
#include <vector>

#include <caf/all.hpp>

#include "actors/kv_manager.h"
#include "actors/scheduler.h"

namespace dspark::actors {

// What the scheduler actor admits for one step: requests moved out of its queue, KV reserved.
struct admitted_batch {
  std::vector<waiting_request> requests;
};

}  // namespace dspark::actors

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspark::actors::waiting_request)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspark::actors::admitted_batch)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(dspark::actors::kv_usage)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<dspark::actors::kv_ask>)

namespace dspark::actors {

using client_atom = caf::atom_constant<caf::atom("client")>;   // a frame from a client socket
using engine_atom = caf::atom_constant<caf::atom("engine")>;   // a frame on the intake<->verifier link
using draft_atom = caf::atom_constant<caf::atom("draft")>;     // a frame on the verifier<->drafter link
using lost_atom = caf::atom_constant<caf::atom("lost")>;       // a peer of a ROUTER went away
using step_atom = caf::atom_constant<caf::atom("step")>;       // the verifier's next batch step
using drain_atom = caf::atom_constant<caf::atom("drain")>;     // graceful shutdown: stop admitting
using link_atom = caf::atom_constant<caf::atom("link")>;       // the connection to the verifier up/down
using enqueue_atom = caf::atom_constant<caf::atom("enqueue")>; // a request joins the scheduler's queue
using remove_atom = caf::atom_constant<caf::atom("remove")>;   // a waiting request leaves it (cancel)
using admit_atom = caf::atom_constant<caf::atom("admit")>;     // which requests start this step
using reserve_atom = caf::atom_constant<caf::atom("reserve")>; // KV for a FIFO prefix of requests
using release_atom = caf::atom_constant<caf::atom("release")>; // a request's KV reservation back
using usage_atom = caf::atom_constant<caf::atom("usage")>;     // kv_manager's accounting now
using queued_atom = caf::atom_constant<caf::atom("queued")>;   // the scheduler's queue length
using handover_atom = caf::atom_constant<caf::atom("handover")>; // the whole queue, to a replacement
using replace_atom = caf::atom_constant<caf::atom("replace")>; // the verifier takes another scheduler

// Owns the client ROUTER and the DEALER to the verifier; replies to drain once every in-flight
// request finished.
using intake_actor = caf::typed_actor<caf::reacts_to<client_atom, std::vector<std::string>>,
                                      caf::reacts_to<engine_atom, std::vector<std::string>>,
                                      caf::reacts_to<lost_atom, std::string>,
                                      caf::reacts_to<link_atom, bool>,
                                      caf::replies_to<drain_atom>::with<bool>>;

// Owns the kv_manager (KV accounting authority; the backend allocates the physical blocks).
//   reserve(asks, shared_credit) -> n: sets the credit, reserves asks[0..n), the longest prefix
//     that fits (kv_manager::reserve_prefix)
//   release(id): a request's reservation back (the last one also zeroes the credit)
//   usage -> the accounting once every earlier message is applied
using kv_manager_actor = caf::typed_actor<caf::replies_to<reserve_atom, std::vector<kv_ask>, int32_t>::with<int32_t>,
                                          caf::reacts_to<release_atom, uint64_t>,
                                          caf::replies_to<usage_atom>::with<kv_usage>>;

// Owns the scheduler (the FIFO admission queue) and asks kv_manager_actor for reservations.
//   enqueue(w) -> queue_verdict as int32 (queued, overloaded, too_large)
//   remove(id): a waiting request cancelled (no answer; absent ids are ignored)
//   admit(free_slots, shared_credit) -> the requests to start now, KV reserved for each; one
//     reserve round trip to kv_manager when requests wait, during which it takes no other message
//   queued -> the queue length
//   handover -> every waiting request, in order, the queue left empty (a replacement takes them)
using scheduler_actor = caf::typed_actor<caf::replies_to<enqueue_atom, waiting_request>::with<int32_t>,
                                         caf::reacts_to<remove_atom, uint64_t>,
                                         caf::replies_to<admit_atom, int32_t, int32_t>::with<admitted_batch>,
                                         caf::replies_to<queued_atom>::with<int32_t>,
                                         caf::replies_to<handover_atom>::with<admitted_batch>>;

// Owns the target backend, the decoder (policy, remote drafter) and the engine ROUTER; steps
// while requests run, asking scheduler_actor which waiting requests start (never waiting for
// the answer on its thread: the step goes on in the reply's continuation). replace(s): the
// waiting requests move from the current scheduler (handover) to `s`, in order, and the old one
// stops; admission goes on with `s`.
using verifier_actor = caf::typed_actor<caf::reacts_to<engine_atom, std::vector<std::string>>,
                                        caf::reacts_to<lost_atom, std::string>,
                                        caf::reacts_to<step_atom>,
                                        caf::reacts_to<draft_atom>,  // drafter registered or lost
                                        caf::reacts_to<replace_atom, scheduler_actor>>;

// Owns one drafter object and a DEALER to the verifier's drafter endpoint.
using drafter_actor = caf::typed_actor<caf::reacts_to<draft_atom, std::vector<std::string>>,
                                       caf::reacts_to<link_atom, bool>>;

}  // namespace dspark::actors

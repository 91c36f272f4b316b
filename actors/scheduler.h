// The verifier's admission queue: which waiting requests join the running batch before a step.
//
// Requests wait in arrival order. Before a step the scheduler admits from the head while the
// decoder has a free slot and kv_manager can reserve the head's worst-case blocks; a head that
// does not fit yet blocks the ones behind it (no starvation of long requests by short ones).
// Running requests leave between steps (finish, cancel), which frees slots and blocks for the
// next admission: continuous batching. enqueue() refuses a request when the queue is full
// (overloaded) or when its worst case exceeds the whole KV budget (it could never start).
//
// Admission is split so kv_manager may live elsewhere (the scheduler and kv_manager actors,
// actors/admission_actors.cpp): heads(n) gives the shapes of the first n waiting requests,
// kv_manager::reserve_prefix reserves the longest prefix of them that fits, pop(k) takes those
// k. admit() does the three with a local kv_manager.
//
// How many drafts each running request verifies is the spec_policy's decision
// (engine/spec/policy.h), taken inside every spec_decoder step on that step's drafts; the
// verifier owns the policy object (docs/actors.md says why it is not behind a message).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "actors/kv_manager.h"
#include "messages/engine_messages.h"

namespace dspark::actors {

using steady_clock = std::chrono::steady_clock;

struct waiting_request {
  std::string peer;            // the intake that sent it (ROUTER routing id)
  uint64_t id = 0;             // the verifier's own key (kv_manager key)
  msg::submit_request req;
  steady_clock::time_point arrived;
};

// enqueue()'s answer. Values are only ever appended.
enum class queue_verdict : int32_t { queued = 0, overloaded = 1, too_large = 2 };

class scheduler {
 public:
  // `shape`: kv_manager's sizes (for the too-large check); max_waiting: the queue limit, > 0.
  scheduler(const kv_manager_params& shape, int32_t max_waiting);

  // Queues `r` at the tail, or refuses it (nothing queued).
  queue_verdict enqueue(waiting_request r);
  // Removes a waiting request (cancel before it ran); false when it is not waiting.
  bool remove(const std::string& peer, uint64_t key, waiting_request* out);
  bool remove(uint64_t id);
  // Removes every waiting request of `peer`; returns how many.
  int32_t remove_peer(const std::string& peer);
  // Appends the shapes of the first min(n, queued) waiting requests to `out`.
  void heads(int32_t n, std::vector<kv_ask>& out) const;
  // Moves the first n waiting requests (KV reserved for them) into `out`; n <= queued().
  void pop(int32_t n, std::vector<waiting_request>& out);
  // heads + kv.reserve_prefix + pop: at most free_slots requests, in order, KV reserved.
  void admit(int32_t free_slots, kv_manager& kv, std::vector<waiting_request>& out);
  int32_t queued() const { return static_cast<int32_t>(queue_.size()); }

 private:
  kv_manager_params shape_;
  int32_t max_waiting_;
  std::deque<waiting_request> queue_;
  std::vector<kv_ask> asks_;  // admit()'s scratch
};

}  // namespace dspark::actors

// The verifier's admission queue: which waiting requests join the running batch before a step.
//
// Requests wait in arrival order. Before each step the scheduler admits from the head while the
// decoder has a free slot and kv_manager can reserve the head's worst-case blocks; a head that
// does not fit yet blocks the ones behind it (no starvation of long requests by short ones).
// Running requests leave between steps (finish, cancel), which frees slots and blocks for the
// next admission: continuous batching.
//
// The per-step shape of the batch (how many drafts each running request verifies) is the
// spec_policy's decision (engine/spec/policy.h), which the spec_decoder applies every step; the
// scheduler owns the policy object so a confidence scheduler plugs in here without touching the
// actors. The policy is wrapped in a timed_policy (engine/spec/timed_policy.h), so the
// scheduler's own cost and the verify budgets it chose are exported with the other metrics.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "actors/kv_manager.h"
#include "engine/spec/policy.h"
#include "engine/spec/timed_policy.h"
#include "messages/engine_messages.h"

namespace dspark::actors {

using steady_clock = std::chrono::steady_clock;

struct waiting_request {
  std::string peer;            // the intake that sent it (ROUTER routing id)
  uint64_t id = 0;             // the verifier's own key (kv_manager key)
  msg::submit_request req;
  steady_clock::time_point arrived;
};

class scheduler {
 public:
  scheduler(kv_manager& kv, std::unique_ptr<spec_policy> policy);

  spec_policy& policy() { return *policy_; }
  // Plan time and verify budgets of every step so far.
  const timed_policy& timing() const { return *policy_; }
  void enqueue(waiting_request r) { queue_.push_back(std::move(r)); }
  // Removes a waiting request (cancel before it ran); false when it is not waiting.
  bool remove(const std::string& peer, uint64_t key, waiting_request* out);
  // Removes every waiting request of `peer`; returns how many.
  int32_t remove_peer(const std::string& peer);
  // Moves the requests to start now into `out` (KV reserved for each), at most free_slots.
  void admit(int32_t free_slots, std::vector<waiting_request>& out);
  int32_t queued() const { return static_cast<int32_t>(queue_.size()); }

 private:
  kv_manager& kv_;
  std::unique_ptr<timed_policy> policy_;
  std::deque<waiting_request> queue_;
};

}  // namespace dspark::actors

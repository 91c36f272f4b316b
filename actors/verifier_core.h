// The verifier's behaviour without the actor around it: requests in (engine messages from the
// intake), one continuous-batching step at a time through the spec_decoder, token deltas and
// final results out. verifier_actor.cpp wraps it in a CAF actor that steps while busy; tests
// can drive it directly.
//
// Per step():
//   1. the scheduler admits waiting requests into free decoder slots, KV reserved by kv_manager
//      (its shared credit refreshed from the backend's prefix cache first);
//   2. spec_decoder.step(): prefill of the new requests, one verify round for the others
//      (drafts from the drafter: in a server the remote_drafter, which proposes nothing when no
//      drafter answers in time);
//   3. every request that committed tokens gets one token_delta (ids + text of this step);
//   4. finished requests are taken: request_done, KV reservation released.
// Messages handled between steps join the next step: new requests queue, cancels end a running
// request at once (its KV is freed by the decoder).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "actors/kv_manager.h"
#include "actors/scheduler.h"
#include "engine/backend.h"
#include "engine/spec/spec_decoder.h"
#include "messages/engine_messages.h"

namespace dspark {
class tokenizer;
class drafter;
}  // namespace dspark

namespace dspark::actors {

struct verifier_options {
  int32_t max_requests = 8;    // requests decoded together (<= the backend's n_seq_max)
  int32_t prefill_chunk = 256;
  int32_t kv_block_size = 16;  // kv_manager's accounting unit (the CPU backend's block size)
  int32_t kv_blocks = 0;       // budget; 0 = max_requests * ceil(n_ctx / kv_block_size)
  int32_t max_waiting = 1024;  // requests waiting for KV; more are rejected as overloaded
  // Prefix caching (spec_decoder_options::prefix_cache): prompts reuse the backend's cached KV
  // blocks of earlier or running requests; kv_manager counts shared blocks once.
  bool prefix_cache = true;
  // Pipelining (spec_decoder_options::pipeline): the drafter drafts one group of requests while
  // the target verifies the other (the remote_drafter's split-phase propose).
  bool pipeline = false;
};

class verifier_core {
 public:
  // Sends one encoded engine message to the intake named by `peer`.
  using sink_fn = std::function<void(const std::string& peer, const std::string& frame)>;

  // be, tok, drafter (nullable) must outlive the core. The policy moves into the scheduler.
  verifier_core(backend& be, drafter* d, std::unique_ptr<spec_policy> policy, const tokenizer* tok,
                std::span<const int32_t> stop_ids, const verifier_options& opt, sink_fn sink);
  ~verifier_core();

  // One frame from intake `peer`: submit, cancel or status_query. A malformed frame is logged
  // to stderr and dropped (the intake is trusted code; a client's bad input never gets here).
  void handle(const std::string& peer, std::string_view frame);
  // Cancels every request of `peer` (the intake went away).
  void drop_peer(const std::string& peer);
  // True while requests run or wait.
  bool busy() const;
  // One continuous-batching step (see above). No-op when idle.
  void step();
  msg::status_report status() const;

 private:
  struct running;
  void submit(const std::string& peer, msg::submit_request&& r);
  void cancel(const std::string& peer, uint64_t key);
  void start(waiting_request&& w);
  void finish(int32_t slot);
  void reject(const std::string& peer, uint64_t key, msg::reject_code c, const std::string& why);
  void send(const std::string& peer);  // sends out_ (the last encoded message)
  int32_t shared_credit() const;       // kv_manager's credit for blocks shared through the prefix cache

  backend& be_;
  drafter* drafter_;
  const verifier_options opt_;
  sink_fn sink_;
  kv_manager kv_;
  scheduler sched_;
  spec_decoder dec_;
  std::vector<std::unique_ptr<running>> slots_;  // [max_requests] by decoder id, null = free
  std::vector<waiting_request> admitted_;        // scratch for scheduler::admit
  std::string out_;                              // encode buffer, reused
  uint64_t next_id_ = 1;
  int64_t steps_ = 0;
  int64_t finished_ = 0;
  int64_t tokens_generated_ = 0;
};

}  // namespace dspark::actors

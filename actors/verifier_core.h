// The verifier's behaviour without the actor around it: requests in (engine messages from the
// intake), one continuous-batching step at a time through the spec_decoder, token deltas and
// final results out. verifier_actor.cpp wraps it in a CAF actor that steps while busy; tests
// can drive it directly.
//
// Per step():
//   1. admission: the scheduler admits waiting requests into free decoder slots, KV reserved by
//      kv_manager (its shared credit taken from the backend's prefix cache);
//   2. spec_decoder.step(): prefill of the new requests, one verify round for the others
//      (drafts from the drafter: in a server the remote_drafter, which proposes nothing when no
//      drafter answers in time);
//   3. every request that committed tokens gets one token_delta (ids + text of this step);
//   4. finished requests are taken: request_done, KV reservation released.
// Messages handled between steps join the next step: new requests queue, cancels end a running
// request at once (its KV is freed by the decoder).
//
// The scheduler and kv_manager sit behind an admission_port. Without one the core builds
// local_admission (both objects in the core, answers at once) and step() does 1-4; tests drive
// it so. In the server they are actors (actor_protocols.h): the verifier actor splits a step
// into wants_admission() -> an admit request to the scheduler actor -> start_admitted() on its
// reply -> run_step(), so its thread never waits for an answer.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "actors/kv_manager.h"
#include "actors/scheduler.h"
#include "engine/backend.h"
#include "engine/spec/spec_decoder.h"
#include "engine/spec/timed_policy.h"
#include "messages/engine_messages.h"

namespace dspark {
class tokenizer;
class drafter;
}  // namespace dspark

namespace dspark::actors {

// Where waiting requests queue and KV is reserved, seen from verifier_core. Every call is made on
// the verifier's thread and every callback runs on it (at once, or when a later message brings
// the answer).
class admission_port {
 public:
  using verdict_fn = std::function<void(uint64_t id, queue_verdict v)>;
  using usage_fn = std::function<void(const kv_usage& u)>;
  virtual ~admission_port() = default;
  // Queues `w`; `done` gets the scheduler's verdict.
  virtual void enqueue(waiting_request w, verdict_fn done) = 0;
  // Drops a waiting request (cancelled before it started). An admission already under way may
  // still bring it back; the core then releases its reservation.
  virtual void remove(uint64_t id) = 0;
  // A started request ended (or failed to start): its reservation goes back.
  virtual void release(uint64_t id) = 0;
  // kv_manager's accounting once every earlier release is applied.
  virtual void usage(usage_fn done) = 0;
  // The last accounting this port knows without asking (status() of a core driven directly).
  virtual kv_usage last_usage() const = 0;
  // Admits at once into `out` (KV reserved) with `shared_credit` set first; false when this port
  // admits only asynchronously (the actors).
  virtual bool admit_now(int32_t free_slots, int32_t shared_credit, std::vector<waiting_request>& out) = 0;
};

// The scheduler and kv_manager as objects of the verifier's own thread.
class local_admission final : public admission_port {
 public:
  local_admission(const kv_manager_params& kv, int32_t max_waiting) : kv_(kv), sched_(kv, max_waiting) {}
  void enqueue(waiting_request w, verdict_fn done) override {
    const uint64_t id = w.id;
    done(id, sched_.enqueue(std::move(w)));
  }
  void remove(uint64_t id) override { sched_.remove(id); }
  void release(uint64_t id) override { kv_.release(id); }
  void usage(usage_fn done) override { done(kv_.usage()); }
  kv_usage last_usage() const override { return kv_.usage(); }
  bool admit_now(int32_t free_slots, int32_t shared_credit, std::vector<waiting_request>& out) override {
    kv_.set_shared_credit(shared_credit);
    sched_.admit(free_slots, kv_, out);
    return true;
  }

 private:
  kv_manager kv_;
  scheduler sched_;
};

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
  // The speculation gate (spec_decoder_options::gate): no drafting where it does not pay.
  spec_gate_params gate = {};
};

class verifier_core {
 public:
  // Sends one encoded engine message to the intake named by `peer`.
  using sink_fn = std::function<void(const std::string& peer, const std::string& frame)>;

  // be, tok, drafter (nullable) must outlive the core; the core owns the policy. `port` null:
  // a local_admission of kv_params(opt, be, policy) and opt.max_waiting.
  verifier_core(backend& be, drafter* d, std::unique_ptr<spec_policy> policy, const tokenizer* tok,
                std::span<const int32_t> stop_ids, const verifier_options& opt, sink_fn sink,
                std::unique_ptr<admission_port> port = nullptr);
  ~verifier_core();

  // kv_manager's sizes for this backend and options: budget opt.kv_blocks (0 = max_requests
  // full contexts), lookahead = the policy's draft budget + 1.
  static kv_manager_params kv_params(const verifier_options& opt, const backend& be, const spec_policy& policy);

  // One frame from intake `peer`: submit, cancel or status_query. A malformed frame is logged
  // to stderr and dropped (the intake is trusted code; a client's bad input never gets here).
  void handle(const std::string& peer, std::string_view frame);
  // Cancels every request of `peer` (the intake went away).
  void drop_peer(const std::string& peer);
  // True while requests run or wait.
  bool busy() const;
  // One continuous-batching step (see above) with a port that admits at once. No-op when idle.
  void step();

  // The split step (an asynchronous port): when wants_admission(), ask the scheduler
  // admit(begin_admission()), hand its answer to start_admitted(); then run_step() (2-4 above).
  // wants_admission() is false while requests wait behind a head that did not fit, until
  // something that could let it in happens (a release, a waiting request cancelled, another
  // shared credit): no round trip per step that is known to admit nothing.
  struct admission_ask {
    int32_t free_slots = 0;
    int32_t shared_credit = 0;
  };
  bool wants_admission() const;
  admission_ask begin_admission();
  int32_t free_slots() const;
  int32_t shared_credit() const;  // kv_manager's credit for blocks shared through the prefix cache
  void start_admitted(std::vector<waiting_request>& admitted);
  void run_step();
  // Ends every waiting request with reject `internal` (the scheduler is gone); running ones go on.
  void reject_waiting(const std::string& why);
  // True while request `id` waits (handed to the scheduler, neither started nor cancelled).
  bool waiting(uint64_t id) const { return pending_.count(id) > 0; }
  // The scheduler's answer to the enqueue of request `id`: a refusal ends it with a reject.
  void verdict(uint64_t id, queue_verdict v);
  // The scheduler behind the port changed: forget that the last admission came back short.
  void admission_changed() { ++unblocks_; }

  // The status with the port's last known KV accounting, or with `kv`.
  msg::status_report status() const;
  msg::status_report status(const kv_usage& kv) const;

 private:
  struct running;
  struct pending {  // handed to the scheduler, not started yet
    std::string peer;
    uint64_t key = 0;
    int32_t prompt_tokens = 0;
  };
  void submit(const std::string& peer, msg::submit_request&& r);
  void cancel(const std::string& peer, uint64_t key);
  void start(waiting_request&& w);
  void finish(int32_t slot);
  void reject(const std::string& peer, uint64_t key, msg::reject_code c, const std::string& why);
  void send(const std::string& peer);  // sends out_ (the last encoded message)
  void release(uint64_t id);           // a reservation back through the port

  backend& be_;
  drafter* drafter_;
  const verifier_options opt_;
  sink_fn sink_;
  std::unique_ptr<timed_policy> policy_;  // the per-step policy hook, timed for the metrics
  std::unique_ptr<admission_port> port_;
  spec_decoder dec_;
  std::unordered_map<uint64_t, pending> pending_;  // by the verifier's id
  admission_ask asked_;     // the admission under way (or the last one)
  int32_t expected_ = 0;    // how many it could start: min(free slots, waiting)
  bool admitted_short_ = false;  // it started fewer: the head did not fit
  uint64_t unblocks_ = 0;        // releases and cancels of waiting requests so far
  uint64_t unblocks_at_ask_ = 0; // ... when it was asked
  std::vector<std::unique_ptr<running>> slots_;  // [max_requests] by decoder id, null = free
  std::vector<waiting_request> admitted_;        // scratch for admit_now
  std::string out_;                              // encode buffer, reused
  uint64_t next_id_ = 1;
  int64_t steps_ = 0;
  int64_t finished_ = 0;
  int64_t tokens_generated_ = 0;
};

}  // namespace dspark::actors

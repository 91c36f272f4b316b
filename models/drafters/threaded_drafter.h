// A drafter decorator that runs the wrapped drafter on a worker thread of its own, so the
// pipelined decoder (spec_decoder_options::pipeline) can draft one group of requests while the
// target verifies the other (drafter.h, split-phase propose).
//
// Every call (begin, on_commit, rollback, end, propose) becomes one command in a FIFO queue that
// the worker runs in order: the wrapped drafter is only ever touched by the worker, in exactly
// the order the decoder made the calls. Only propose_end (and the synchronous propose) waits, for
// that propose's drafts; everything else returns as soon as it is queued.
//
// The spans a call carries are valid only during the call (a prompt, committed tokens, the
// target features of a forward that the next forward overwrites), so they are copied into two
// rings allocated at construction (tokens; features packed [n_layers][n_rows][n_embd]). The
// queue, the rings and the propose batch are preallocated: the hot path allocates nothing. A
// call that finds the queue or a ring full waits for the worker to make room; a payload bigger
// than its whole ring waits until the worker is idle and runs on the calling thread (the worker
// is then provably idle, so the wrapped drafter is still used by one thread at a time).
// propose_begin copies the batch; the contexts it points to must stay valid until propose_end
// (the drafter.h contract).
//
//   decoder thread:  propose_begin(B) on_commit(a1) on_commit(a2) ... propose_end()  (waits)
//   worker thread:   [ propose(B) ............ ][on_commit(a1)][on_commit(a2)]
//
// An exception thrown by the wrapped drafter on the worker is rethrown to the caller by the
// next call that waits (propose_end, propose) or, failing that, by the next call.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <vector>

#include "models/drafters/drafter.h"

namespace dspark {

struct threaded_drafter_params {
  int32_t max_slots = 1;             // as the wrapped drafter's
  int32_t queue = 0;                 // commands in flight; 0 = 8 * max_slots + 16
  size_t token_ring = size_t{1} << 16;    // int32 tokens of queued begin / on_commit calls
  size_t feature_ring = size_t{1} << 21;  // f32 floats of queued features (only with capture_layers)
};

// Time the worker spent in the wrapped drafter and the time callers spent waiting for it.
struct threaded_drafter_stats {
  double busy_s = 0;       // worker inside the wrapped drafter (every call)
  double propose_s = 0;    // of which in propose
  double wait_s = 0;       // callers blocked: propose_end, a synchronous propose, a full queue/ring
  int64_t proposes = 0;
  int64_t commands = 0;
  int64_t inline_calls = 0;  // payloads too big for their ring, run on the calling thread
};

class threaded_drafter final : public drafter {
 public:
  // inner non-null, max_slots >= 1, rings > 0. invalid_argument_error otherwise, or when the
  // inner drafter drafts on the target's backend (caps().shares_target: it cannot overlap).
  threaded_drafter(std::unique_ptr<drafter> inner, const threaded_drafter_params& p);
  // Runs what is queued, then stops the worker.
  ~threaded_drafter() override;

  // The inner drafter's, but with host features: the rows are copied into the ring on the
  // decoder's thread, and the worker's reads of device rows could not be ordered before the
  // target's next forward.
  const drafter_caps& caps() const override { return caps_; }
  void begin(int32_t slot, std::span<const int32_t> prompt) override;
  void propose(std::span<const propose_request> batch, draft_batch& out) override;
  void propose_begin(std::span<const propose_request> batch, draft_batch& out) override;
  void propose_end() override;
  void on_commit(int32_t slot, const commit_info& c) override;
  void rollback(int32_t slot, int32_t n_context) override;
  void end(int32_t slot) override;

  // Waits until every queued call has run.
  void drain();
  threaded_drafter_stats stats() const;
  drafter& inner() { return *inner_; }

 private:
  enum class op : uint8_t { begin, commit, rollback, end, propose };
  struct command {
    op kind = op::end;
    int32_t slot = 0;
    int32_t n = 0;            // rollback: n_context
    uint64_t tok_pos = 0;     // virtual position in the token ring, tok_n tokens
    uint32_t tok_n = 0;
    uint64_t feat_pos = 0;    // virtual position in the feature ring, feat_n floats
    uint64_t feat_n = 0;
    commit_info c;            // on_commit: counts and feature shape (spans fixed up by the worker)
  };
  // A FIFO ring of T with virtual positions: a payload never straddles the end.
  struct ring_pos {
    uint64_t write = 0, read = 0;  // read: everything before it has been consumed
  };
  void worker();
  void run(const command& c);
  // Reserves n entries of a ring of capacity cap, waiting while it is full; lk held.
  uint64_t reserve(ring_pos& r, size_t cap, size_t n, std::unique_lock<std::mutex>& lk);
  void push(const command& c, std::unique_lock<std::mutex>& lk);
  void wait_idle(std::unique_lock<std::mutex>& lk);
  // A payload bigger than its ring (too_big) runs `call` on the calling thread once the worker
  // is idle; returns whether it did. lk held on entry, released when it ran.
  template <class Call>
  bool run_inline_if(bool too_big, std::unique_lock<std::mutex>& lk, Call&& call);
  // Copies t into the token ring at the reserved virtual position pos.
  void copy_tokens(std::span<const int32_t> t, uint64_t pos);
  void rethrow(std::unique_lock<std::mutex>& lk);
  int32_t checked(int32_t slot) const;

  std::unique_ptr<drafter> inner_;
  drafter_caps caps_;
  int32_t max_slots_;
  std::vector<command> q_;             // [queue] ring of commands
  uint64_t head_ = 0, tail_ = 0;       // pushed, finished
  std::vector<int32_t> tokens_;        // [token_ring]
  std::vector<float> features_;        // [feature_ring] (empty without capture_layers)
  ring_pos tok_, feat_;
  std::vector<propose_request> batch_; // [max_slots] the propose in flight
  size_t batch_n_ = 0;
  draft_batch* out_ = nullptr;
  bool in_flight_ = false;
  uint64_t propose_seq_ = 0;           // command index of the propose in flight
  mutable std::mutex mu_;
  std::condition_variable work_cv_;    // the worker waits for commands
  std::condition_variable done_cv_;    // callers wait for progress
  std::exception_ptr error_;
  bool stop_ = false;
  threaded_drafter_stats stats_;
  std::thread thread_;
};

}  // namespace dspark

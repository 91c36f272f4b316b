// The verifier's side of a drafter that lives in another actor (same process over inproc, or
// another process over ipc/tcp): a drafter (models/drafters/drafter.h) whose calls become
// messages (messages/drafter_messages.h) on a ROUTER socket that drafter services connect to.
//
// Only propose waits for an answer, and only until a deadline: a drafter that is absent, slow
// or dead makes propose return no drafts, so that step is plain decoding. The verifier's
// output never depends on the drafter (verification is lossless), so at temperature 0 the
// text is the same whichever drafter answers, or none; no request fails.
//
// Hot swap: a drafter service announces itself with hello. The newest one replaces the
// current one (if any) and is brought up to date before its first propose: reset, then for
// every live slot begin(prompt + committed tokens but the last) and commit(last token) -- the
// same calls a request that started with that prompt would have seen. This class keeps each
// slot's context (prompt + committed, cut by rollback) for exactly that purpose. A drafter is
// dropped when the socket reports it gone (EHOSTUNREACH) or after `max_misses` consecutive
// missed deadlines; a later hello brings it (or another kind) back.
//
// Timeline of a swap mid-batch:
//   step n    propose -> drafter A answers          (speculative step)
//   ---       A is SIGKILLed
//   step n+1  propose -> send fails / deadline     (plain step: no drafts)
//   ---       drafter B connects, hello
//   step n+2  adopt B: reset, begin+commit per live slot; propose -> B answers
//
// Split-phase propose (the pipelined decoder): propose_begin sends the propose message and
// returns, propose_end waits for the answer until the deadline (the same misses, drops and
// swaps as the synchronous propose, which is begin + end). The drafter process drafts while
// the verifier runs the other group's target forward; the commits sent in between reach it
// after the propose (one DEALER, in order). A proposal that poll() receives while one is in
// flight is kept for propose_end.
//
// Target features (for drafters that capture layers): on one host (ipc/inproc links) they are
// written into a shared memory segment named in `reset`, and commit carries only the offset.
// The segment is a ring: an answered propose frees everything written before that propose was
// sent (the drafter handles messages in order, so it has read those commits); commits sent while
// a propose is in flight stay until the next answer. With nothing left unread the ring restarts
// at offset 0. When a commit does not fit, or over tcp, the features travel inline.
#pragma once

#include <chrono>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "actors/shared_segment.h"
#include "actors/zmq_channel.h"
#include "messages/drafter_messages.h"
#include "models/drafters/drafter.h"

namespace dspark::actors {

struct remote_drafter_options {
  std::string endpoint;   // bound here; drafter services connect
  int32_t max_slots = 1;  // the decoder's max_requests
  int64_t n_vocab = 0;
  std::chrono::milliseconds timeout{200};  // deadline of one propose
  int32_t max_misses = 3;  // consecutive missed deadlines before the drafter is dropped
  // What the decoder is built for: dist_kind one_hot or sparse (max_sparse entries), and the
  // target layers captured for drafters (a drafter asking for others is refused).
  draft_dist_kind dist_kind = draft_dist_kind::one_hot;
  int32_t max_sparse = 0;
  std::vector<int32_t> capture_layers;
  // Host shared memory for features, used when the link is ipc:// or inproc:// (same host) and
  // this is > 0; over tcp features travel inline.
  size_t feature_shm_bytes = size_t{64} << 20;
  // CURVE secret key of the bound endpoint (Z85; "" = plain): drafter services must then connect
  // with the matching public key (server_config link_curve_secret_key).
  std::string curve_secret_key;
};

class remote_drafter final : public drafter {
 public:
  // Binds the endpoint (std::runtime_error naming it when that fails).
  remote_drafter(zmq::context_t& ctx, const remote_drafter_options& opt);
  ~remote_drafter() override;

  const drafter_caps& caps() const override { return caps_; }
  void begin(int32_t slot, std::span<const int32_t> prompt) override;
  void propose(std::span<const propose_request> batch, draft_batch& out) override;
  void propose_begin(std::span<const propose_request> batch, draft_batch& out) override;
  void propose_end() override;
  void on_commit(int32_t slot, const commit_info& c) override;
  void rollback(int32_t slot, int32_t n_context) override;
  void end(int32_t slot) override;

  // Processes pending hellos and losses without proposing (the verifier calls it when idle).
  void poll();
  // `fn` runs on the I/O thread whenever a registration or a loss arrives, so an idle verifier
  // can poll() (an actor: one message to itself). Set once, before it matters.
  void set_notify(std::function<void()> fn);
  // The connected drafter's name ("" when none).
  const std::string& current() const { return peer_name_; }
  int64_t timeouts() const { return timeouts_; }
  int64_t swaps() const { return swaps_; }
  int64_t shm_commits() const { return shm_commits_; }  // commits whose features went through shm
  const std::string& endpoint() const { return ch_.endpoint(); }

 private:
  struct slot_state {
    bool open = false;
    bool committed = false;     // at least one commit since begin
    std::vector<int32_t> ctx;   // prompt + committed tokens
  };
  struct inbound {
    bool lost = false;
    frames f;  // [peer][payload] or, when lost, [peer]
  };
  // Handles one inbound item; returns true when it is the answer to the propose in flight
  // (filled into its draft batch).
  bool dispatch(inbound& in);
  void adopt(const std::string& peer, const msg::drafter_hello& h);
  void drop(const char* why);
  void fill(const msg::drafter_proposal& p, std::span<const propose_request> batch, draft_batch& out);
  void send_to_peer();  // sends buf_ to the current peer

  remote_drafter_options opt_;
  drafter_caps caps_;
  zmq_channel ch_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<inbound> inbox_;
  std::function<void()> notify_;
  std::atomic<bool> notify_set_{false};
  std::optional<std::string> peer_;
  std::string peer_name_;
  std::vector<slot_state> slots_;
  std::vector<int32_t> budget_;   // [max_slots] max_drafts of the current propose, -1 = not asked
  msg::drafter_propose prop_;     // reused
  msg::drafter_commit commit_;    // reused
  std::string buf_;               // encode buffer, reused
  uint64_t seq_ = 0;
  // The propose in flight (propose_begin .. propose_end).
  bool in_flight_ = false;
  bool answered_ = false;
  std::span<const propose_request> fl_batch_;
  draft_batch* fl_out_ = nullptr;
  std::chrono::steady_clock::time_point deadline_;
  shared_segment shm_;     // features for co-located drafters (invalid: inline only)
  // Ring positions in bytes, growing without bound (offset = position % size): everything
  // before shm_read_ has been read by the drafter; shm_mark_ is shm_write_ when the propose in
  // flight was sent.
  uint64_t shm_write_ = 0, shm_read_ = 0, shm_mark_ = 0;
  int32_t misses_ = 0;
  int64_t timeouts_ = 0;
  int64_t swaps_ = 0;
  int64_t shm_commits_ = 0;
};

}  // namespace dspark::actors

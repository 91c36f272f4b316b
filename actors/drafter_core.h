// A drafter service's behaviour without the actor around it: owns one drafter object (ngram,
// layerskip:K, ...; built by the same factory as the CLI) and answers the verifier's
// remote_drafter messages (messages/drafter_messages.h) with calls on it.
//
// It keeps each slot's context (begin's prompt + committed tokens, cut by rollback), because
// the drafter interface passes the context to propose while the wire carries only its length.
// A propose item whose length disagrees with the copy (a missed message) gets no drafts; the
// verifier then decodes that request plainly, which is always correct.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "actors/shared_segment.h"
#include "engine/sampler.h"
#include "engine/spec/draft_batch.h"
#include "messages/drafter_messages.h"
#include "models/drafters/drafter.h"

namespace dspark::actors {

class drafter_core {
 public:
  using send_fn = std::function<void(const std::string& frame)>;

  // d is built for max_slots slots; gamma_max bounds a chain. n_vocab: the target's vocabulary.
  drafter_core(std::unique_ptr<drafter> d, int32_t max_slots, int32_t gamma_max, int64_t n_vocab, send_fn send);

  // The hello frame announcing this drafter (sent on connect).
  std::string hello() const;
  // One frame from the verifier. Malformed frames are logged and dropped; a drafter exception is
  // logged and that call proposes nothing.
  void handle(std::string_view frame);
  const drafter_caps& caps() const { return d_->caps(); }
  // Ends every open slot (the verifier that owned them is gone).
  void handle_reset() { reset(); }

 private:
  void propose(const msg::drafter_propose& p);
  void reset();

  std::unique_ptr<drafter> d_;
  int32_t max_slots_;
  int32_t gamma_max_;
  send_fn send_;
  std::vector<std::vector<int32_t>> ctx_;  // [max_slots] prompt + committed
  std::vector<bool> open_;                 // [max_slots]
  draft_batch out_;
  std::vector<propose_request> reqs_;      // reused
  std::vector<sampling_params> params_;    // [max_slots] reused
  msg::drafter_proposal reply_;            // reused
  shared_segment shm_;                     // the verifier's feature segment (read-only), if any
  std::string buf_;
};

}  // namespace dspark::actors

// A drafter decorator that records every verify round of every request to a round trace
// (models/drafters/round_trace.h): the confidences the inner drafter proposed and how many of
// the verified drafts the target accepted. `dspark eval --record-rounds FILE` wraps its drafter
// in one; replay_drafter.h replays such traces.
//
// It only sees the drafter interface, so the decoding loop stays untouched:
//   propose     the inner drafter proposes; its chain's confidences are kept per slot as the
//               slot's pending round (before the decoder replaces them with online estimates
//               for drafters without a head: the trace holds what the drafter said)
//   on_commit   with a pending round: the round is complete, l = n_proposed and a = n_accepted;
//               without one (prefill chunks, x0) nothing is recorded
//   end         the request's line is written (and flushed)
// The last round of a request ends it without an on_commit, so it is not in the trace.
// Recording allocates (it appends rounds); it is a measurement tool, not a serving path.
#pragma once

#include <cstdint>
#include <fstream>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "models/drafters/drafter.h"
#include "models/drafters/round_trace.h"

namespace dspark {

class recording_drafter final : public drafter {
 public:
  // inner non-null, max_slots >= 1 (as the inner drafter's). Writes the header to `path` now;
  // `note` goes into it. invalid_argument_error for a null inner drafter, bad sizes or a path
  // that cannot be written.
  recording_drafter(std::unique_ptr<drafter> inner, int32_t max_slots, int32_t gamma_max, const std::string& path,
                    const std::string& note);

  const drafter_caps& caps() const override { return inner_->caps(); }
  void begin(int32_t slot, std::span<const int32_t> prompt) override;
  void propose(std::span<const propose_request> batch, draft_batch& out) override;
  void on_commit(int32_t slot, const commit_info& c) override;
  void before_target_forward() override { inner_->before_target_forward(); }
  void rollback(int32_t slot, int32_t n_context) override;
  void end(int32_t slot) override;

  int64_t requests_written() const { return written_; }
  int64_t rounds_written() const { return rounds_written_; }
  drafter& inner() { return *inner_; }

 private:
  struct slot_state {
    bool open = false;
    bool pending = false;          // a proposed round awaits its on_commit
    std::vector<float> confidence; // the pending round's c_1..c_g
    trace_request rec;
  };
  slot_state& checked(int32_t slot, const char* who);

  std::unique_ptr<drafter> inner_;
  int32_t gamma_max_;
  std::ofstream out_;
  std::string path_;
  std::vector<slot_state> slots_;  // [max_slots]
  int64_t begun_ = 0;
  int64_t written_ = 0;
  int64_t rounds_written_ = 0;
};

}  // namespace dspark

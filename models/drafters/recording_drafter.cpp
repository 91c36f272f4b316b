// recording_drafter: writes the round trace of the drafter it wraps (see recording_drafter.h).
#include "models/drafters/recording_drafter.h"

#include <string>

#include "common/error.h"

namespace dspark {

recording_drafter::recording_drafter(std::unique_ptr<drafter> inner, int32_t max_slots, int32_t gamma_max,
                                     const std::string& path, const std::string& note)
    : inner_(std::move(inner)), gamma_max_(gamma_max), out_(path), path_(path) {
  if (!inner_) throw invalid_argument_error("recording_drafter: no drafter to wrap");
  if (max_slots < 1 || gamma_max < 1)
    throw invalid_argument_error("recording_drafter: max_slots and gamma_max must be >= 1");
  if (!out_) throw invalid_argument_error("recording_drafter: cannot write " + path);
  slots_.resize(static_cast<size_t>(max_slots));
  round_trace_header h;
  h.drafter = inner_->caps().name;
  h.has_confidence = inner_->caps().has_confidence;
  h.gamma_max = gamma_max;
  h.note = note;
  out_ << trace_header_line(h) << '\n' << std::flush;
}

recording_drafter::slot_state& recording_drafter::checked(int32_t slot, const char* who) {
  if (slot < 0 || slot >= static_cast<int32_t>(slots_.size()))
    throw invalid_argument_error(std::string("recording_drafter::") + who + ": slot " + std::to_string(slot) +
                                 " out of range");
  return slots_[static_cast<size_t>(slot)];
}

void recording_drafter::begin(int32_t slot, std::span<const int32_t> prompt) {
  slot_state& s = checked(slot, "begin");
  s = slot_state{};
  s.open = true;
  s.rec.index = begun_++;
  s.rec.prompt_tokens = static_cast<int32_t>(prompt.size());
  inner_->begin(slot, prompt);
}

void recording_drafter::propose(std::span<const propose_request> batch, draft_batch& out) {
  inner_->propose(batch, out);
  for (const propose_request& r : batch) {
    slot_state& s = checked(r.slot, "propose");
    const std::span<const float> c = out.confidences(r.slot);
    s.confidence.assign(c.begin(), c.end());
    s.pending = true;
  }
}

void recording_drafter::on_commit(int32_t slot, const commit_info& c) {
  slot_state& s = checked(slot, "on_commit");
  if (s.pending) {
    s.rec.rounds.push_back(trace_round{s.confidence, c.n_proposed, c.n_accepted});
    s.pending = false;
  }
  inner_->on_commit(slot, c);
}

void recording_drafter::rollback(int32_t slot, int32_t n_context) {
  checked(slot, "rollback").pending = false;  // an abandoned step has no outcome
  inner_->rollback(slot, n_context);
}

void recording_drafter::end(int32_t slot) {
  slot_state& s = checked(slot, "end");
  if (s.open) {
    out_ << trace_request_line(s.rec) << '\n' << std::flush;
    if (!out_) throw invalid_argument_error("recording_drafter: writing " + path_ + " failed");
    ++written_;
    rounds_written_ += static_cast<int64_t>(s.rec.rounds.size());
  }
  s = slot_state{};
  inner_->end(slot);
}

}  // namespace dspark

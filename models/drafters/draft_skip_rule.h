// Difficulty-aware draft skipping, the decision (issue 7 item 5; the method doc's stated
// limitation: the parallel draft pass is paid even for requests whose drafts will be rejected).
// skipping_drafter.h applies it per request slot around any drafter; this file is the rule
// alone, so it can be checked against hand-computed cases.
//
// Why the threshold is the draft cost: a verify step costs 1 (the unit) and commits 1 token
// whether or not it carries drafts; drafting adds `draft_cost` (the drafter's time per round as
// a fraction of a verify step's, measured: drafter seconds per round / verify seconds per
// step, e.g. from `dspark bench-spec --draft-skip off`) and adds E accepted tokens on average.
// Drafting pays iff (1 + E) / (1 + draft_cost) > 1, i.e. iff E > draft_cost. (A bigger verify
// batch costs too; on a GPU at small batch it is nearly free, on a CPU fold it into draft_cost.)
//
// E, the expected accepted drafts of the request's next round:
//   ema            exponential moving average of accepted drafts per drafted round
//                  (first round: its own value; then ema += alpha * (accepted - ema))
//   conf           the drafter's own expectation for its last chain, sum_k c_1 * ... * c_k
//                  (only drafters with a confidence head; -1 otherwise)
//   E = ema                      without conf
//   E = (ema + conf) / 2         with conf: the head reacts to the text at once, the ema to
//                                what the verifier really accepted
//
// Schedule: the first `warmup_rounds` rounds always draft. Afterwards a round drafts when
// E > draft_cost. Otherwise it is skipped, except that every (interval + 1)-th skipped round is
// a probe that drafts anyway so the estimate can recover when the text turns easy again; each
// probe doubles the interval (probe_interval, 2x, 4x, ... up to max_probe_interval), and a
// round that drafts because E > draft_cost resets it. Skipping only changes which drafts are
// proposed; verification is untouched, so the output stays exactly the target's.
#pragma once

#include <cstdint>

namespace dspark {

struct draft_skip_params {
  double draft_cost = 0.25;          // drafting per round / one verify step, >= 0
  // Measure draft_cost online instead (draft_cost_meter.h; skipping_drafter feeds it, and
  // draft_cost is then only the value used until the first measurements).
  bool measured_cost = false;
  double ema_alpha = 0.3;            // weight of the newest round, (0, 1]
  int32_t warmup_rounds = 2;         // drafted rounds before skipping may start, >= 0
  int32_t probe_interval = 4;        // skipped rounds before the first re-probe, >= 1
  int32_t max_probe_interval = 32;   // backoff cap, >= probe_interval
};

// Per request slot.
struct draft_skip_state {
  double ema = 0.0;         // accepted drafts per drafted round
  double conf = -1.0;       // the drafter's expected accepted drafts of its last chain; -1 none
  int32_t observed = 0;     // drafted rounds seen
  int32_t skipped = 0;      // consecutive skipped rounds since the last drafted round
  int32_t interval = 0;     // current probe interval (0 = not started: probe_interval)
};

enum class draft_skip_decision : uint8_t { draft, skip, probe };

class draft_skip_rule {
 public:
  // invalid_argument_error for parameters out of range.
  explicit draft_skip_rule(const draft_skip_params& p);
  const draft_skip_params& params() const { return p_; }

  // E for the request's next round (see above).
  static double expected_accepted(const draft_skip_state& s);
  // Whether the request drafts this round (draft: E > draft_cost or warm-up; probe: drafts
  // although E says skip); advances the skip / probe counters.
  draft_skip_decision decide(draft_skip_state& s) const;
  // A drafted round finished: `accepted` drafts were accepted; `conf` as draft_skip_state::conf.
  void observe(draft_skip_state& s, int32_t accepted, double conf) const;
  // The threshold of decide(), for a measured cost (>= 0; invalid_argument_error otherwise).
  void set_draft_cost(double c);

 private:
  draft_skip_params p_;
};

}  // namespace dspark

// The draft cost that difficulty-aware skipping compares expected accepted drafts with,
// measured online instead of configured (draft_skip_rule.h explains the comparison).
//
// Drafting pays for a request iff the drafts it gets verified and accepted, E, buy more time
// than drafting it took: E * (verify time per request) > (draft time per request), i.e.
//   E > cost = (draft seconds per request of the batch) / (verify-step seconds per request).
// Per request of the batch, drafted or skipped, not per drafted request: a batched drafter
// (DSpark's parallel pass, a replayed pass charged as target layers) costs about the same
// whether 1 or 16 requests draft, so dividing by the drafted count made the cost grow as
// requests skipped, which made more of them skip, until none drafted (measured: the 8B replay
// at 16 requests settled either way on two runs). Skipping a single request of a batched pass
// saves little; stopping the whole pass where it does not pay is the speculation gate's job
// (engine/spec/spec_gate.h). For a drafter whose time grows with the requests it drafts, this
// under-counts while many skip and converges to the true per-request cost as they return.
// Both sides move with the load: at concurrency 1 on an 8B target a verify step is ~6 ms for
// one request and a 2-layer draft pass ~0.4 ms (cost ~0.07); at 256 requests the step is
// ~35 ms for all of them (0.14 ms each) while the draft pass grows with the rows it drafts
// (cost ~0.2-0.4). A constant can only be right at one load.
//
// The meter sees the decoding loop only through the drafter calls: a round runs from one
// propose to the next, so its verify part is the interval minus the drafting and commit time
// measured inside it (a prefill chunk riding in the step counts as verify time: conservative
// in neither direction, and averaged away). Exponential moving averages, seeded with the first
// samples. An interval far longer than the average (an idle loop between bursts) is an
// outlier and ignored, unless three come in a row: then the load has changed and the average
// restarts from it.
#pragma once

#include <cstdint>

namespace dspark {

class draft_cost_meter {
 public:
  // alpha in (0, 1]; initial_cost >= 0 is cost() until both sides have a sample.
  // invalid_argument_error otherwise.
  explicit draft_cost_meter(double alpha = 0.2, double initial_cost = 0.25);

  // A round begins at time t (seconds on a monotonic clock), which ends the previous one.
  void round_start(double t);
  // This round's drafting: draft_s seconds in the drafter's propose for n_drafted requests,
  // out of n_requests in the propose batch (drafted or skipped).
  void round_drafted(double draft_s, int32_t n_drafted, int32_t n_requests);
  // Time spent in the drafter's commit calls of this round.
  void committed(double s);

  double cost() const;
  double draft_s_per_request() const { return draft_; }    // < 0: no sample yet
  double verify_s_per_request() const { return verify_; }  // < 0: no sample yet

 private:
  // Folds sample x into avg (seeded when avg < 0), with the outlier rule above; `run` counts
  // consecutive outliers.
  void fold(double& avg, int32_t& run, double x) const;

  double alpha_, initial_;
  double draft_ = -1.0, verify_ = -1.0;
  int32_t draft_outliers_ = 0, verify_outliers_ = 0;
  bool open_ = false;       // a round has started
  double start_ = 0.0;      // its start
  double draft_s_ = 0.0;    // its drafting time, drafted requests, batch size, commit time
  int32_t n_drafted_ = 0, n_requests_ = 0;
  double commit_s_ = 0.0;
};

}  // namespace dspark

// The speculation gate: whether the decoding loop drafts at all at the current load.
//
// Confidence scheduling (Algorithm 1) and draft skipping decide how many drafts each request
// verifies, but a request that drafts still keeps its drafter up to date every step (target
// features captured and copied, the drafter's context rows written), even when the policy
// verifies nothing. At high concurrency that upkeep is all that speculation adds, so the loop
// runs below plain decoding. The gate switches speculation off where it does not pay:
//
//   - closed: requests that join decode plainly (no drafter, no feature capture), and the
//     requests already drafting are detached (drafter::end) at the next step; once every
//     decoding request is detached, the steps are exactly plain decoding's;
//   - open: requests that join get the drafter again. Detached requests stay plain to their
//     end: their drafter context misses the rows decoded while detached.
//
// Modes:
//   off      always open (the loop as without a gate);
//   batch N  open while at most N requests decode (like vLLM's disable-by-batch-size);
//   auto     measured: over a window of steps with requests drafting, the tokens speculation
//            added per request-step G = accepted drafts / request-steps, against what it cost,
//            o = (the window's seconds) / (what plain decoding would have taken for the same
//            steps) - 1. Speculation pays iff (N + A) / T_spec > N / T_plain, i.e. G > o; the
//            gate closes when G <= o + margin. T_plain is the target's step-time curve SPS(B)
//            (set_step_curve; the scheduled and async policies profile one) at each step's
//            decoding count, times how much slower this loop runs whole plain steps (prefill of
//            the requests that join included) than the profile, measured on the gate's own
//            closed steps. Until it has closed once: the curve plus the window's prefill
//            seconds. (The window's prefill is not plain decoding's: a speculating step finishes
//            more requests, so more prompts join; charging them to plain decoding hid a 7.5%
//            loss at 256 requests on the GPU, twelfth session.) So o includes the extra verify
//            rows, feature capture and the drafter's upkeep. Before the first calibration a
//            loop slower than its profile reads as costlier speculation: the error closes the
//            gate, which calibrates it, and the next reprobe decides again; the opposite error
//            would keep speculating at a loss and never learn. o is never taken below the
//            drafter's share, drafter seconds / other seconds, which is the whole estimate
//            without a curve. It reopens when the decoding count (its mean over the last 8
//            closed steps: one step's dip while successors prefill is no change of load) falls
//            to half of the count it closed at, or after a reprobe interval of closed steps,
//            so a change of load or of workload is noticed: reprobe_steps at first, doubling
//            with every close that follows a reopening (up to reprobe_max) until a window finds
//            speculation paying again.
//            A probe is not free: until its window decides, the requests that joined draft at
//            a loss, (o - G) / (1 + o) of throughput over the probe's steps (all of them, not
//            only the window's: a batched draft pass costs about as much for a few requests as
//            for all, so the first steps of a probe lose the most), or the window's loss if
//            that is larger. So the closed
//            interval is also at least long enough that probing costs at most probe_budget of
//            the throughput: interval >= P * (loss / probe_budget - 1), P the steps a probe is
//            expected to take: at least as many as the last one (the steps the gate was open
//            before it closed) and, from the rate at which requests join while closed, the
//            steps until half of the load has joined (the window waits for them). At 256
//            requests on an 8B shape, 5 joining per step and 11% below plain, P = 30 and the
//            interval about 300 steps; on a 135M target where a probe ran 25% below plain,
//            24 closed steps per probe step.
//            Reopened, only requests that join draft; the window counts only steps in which
//            at least half of the decoding requests draft, so it waits for them.
// A window ends once it has at least min_steps steps and min_request_steps request-steps, so
// a batch of 256 decides within a few steps and a single request after enough rounds to say.
// Once a window has paid, a close is decided on the pooled sums of the current window and the
// windows decided before it since the gate opened or a probe paid (pool_windows in all, a
// sliding pool): a 4-step window is noisy (at 16 requests its accepted count varies by about
// 20%, and one slow host step moves its cost as much), and on the GPU single windows closed the
// gate in the middle of levels where every other window paid by 30% or more
// (docs/benchmarks.md, tenth session). A probe's first window still decides alone, so a losing
// probe ends as soon as before.
// A window that accepted nothing at a cost below k_idle_cost is idle (drafts never offered) and
// is dropped undecided.
// Steps before the policy can verify (spec_policy::warmed_up: async K's first `lag` steps)
// are left out of it.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "engine/spec/sps_table.h"

namespace dspark {

enum class spec_gate_mode { off, batch, automatic };

struct spec_gate_params {
  spec_gate_mode mode = spec_gate_mode::off;
  int32_t max_batch = 0;            // batch: open while decoding <= max_batch (>= 1)
  double margin = 0.0;              // auto: close when G <= o + margin
  int32_t min_steps = 4;            // auto: a window's steps with drafting requests
  int32_t min_request_steps = 64;   // auto: and its decoding request-steps
  int32_t reprobe_steps = 64;       // auto: closed steps before trying again (first interval)
  int32_t reprobe_max = 4096;       // auto: the interval's ceiling
  double probe_budget = 0.01;       // auto: throughput share reprobes may cost, (0, 1]; 1: no floor
  int32_t pool_windows = 4;         // auto: windows a decision pools once one has paid (1: each alone)
};

// One step as the loop saw it.
struct spec_gate_step {
  int32_t decoding = 0;       // requests that took a verify round this step
  int32_t drafting = 0;       // of those, attached to the drafter
  int32_t accepted = 0;       // drafts accepted this step, all requests
  double drafter_s = 0.0;     // seconds in drafter calls (propose wait, on_commit, begin, end)
  double step_s = 0.0;        // the whole step's seconds
  double prefill_s = 0.0;     // of those, in prefill chunks of joining requests
  bool policy_warm = true;    // spec_policy::warmed_up(): false keeps the step out of the window
  // The step paid a one-off start-up cost on the target (it timed cuBLASLt algorithms for a new
  // shape: backend::graph_stats): kept out of windows, probes and the plain price, so that a
  // level's first steps do not decide for the whole level
  bool one_off = false;
};

// One decided auto window, for diagnosis (spec_gate::recent_windows): when it ended, what it
// summed and what it decided.
struct spec_gate_window {
  int64_t end_step = 0;          // the gate's step count (observe calls) when it decided
  int32_t steps = 0;
  int64_t request_steps = 0;     // decoding requests summed over its steps
  int64_t drafting_steps = 0;    // of those, requests attached to the drafter
  int64_t accepted = 0;
  double step_s = 0.0;
  double drafter_s = 0.0;
  double prefill_s = 0.0;
  double plain_s = 0.0;          // what plain decoding would have taken (SPS x scale, or SPS + prefill)
  double gain = 0.0;             // G and o of this window alone
  double cost = 0.0;
  double pooled_gain = 0.0;      // G and o of the sums that decided (this window and the ones
  double pooled_cost = 0.0;      // pooled with it; equal to gain and cost when alone)
  int32_t pooled = 1;            // windows in those sums
  bool closed = false;           // this window closed the gate
  bool probing = false;          // it was the first window after a reopening
};

struct spec_gate_stats {
  int64_t closes = 0;           // open -> closed transitions
  int64_t reopens = 0;          // closed -> open transitions
  int64_t closed_steps = 0;     // steps taken while closed
  int64_t detached = 0;         // requests the gate took off the drafter
  int64_t plain_admitted = 0;   // requests that joined while closed (never drafted)
  double last_gain = 0.0;       // G and o of the last auto decision (pooled windows)
  double last_cost = 0.0;
  int64_t windows = 0;          // auto windows decided (each closes the gate or keeps it open)
  int64_t idle_windows = 0;     // windows dropped undecided: nothing accepted at no measurable cost
  // The decision that closed the gate last: its G, o, steps and request-steps (the pooled
  // windows' sums), and the open steps since the gate (re)opened or a window last paid.
  // Diagnostics for a gate that closes where speculation measured as paying elsewhere in the
  // same level (a short window's noise, or a start-up effect inside it).
  double close_gain = 0.0;
  double close_cost = 0.0;
  int32_t close_window_steps = 0;
  int64_t close_window_request_steps = 0;
  int32_t close_open_steps = 0;
  double probe_loss = 0.0;      // throughput share the last probe lost, (o - G) / (1 + o)
  double plain_scale = 0.0;     // closed steps' seconds (prefill included) over SPS's; 0 = not measured
  int32_t closed_at = 0;        // mean decoding count of the window that closed it
  int32_t reprobe_interval = 0; // closed steps before the next reprobe (while closed: as of now)
};

class spec_gate {
 public:
  // invalid_argument_error for batch mode with max_batch < 1, or auto with min_steps < 1,
  // min_request_steps < 1, reprobe_steps < 1, a margin outside [-1, 1], a probe_budget
  // outside (0, 1] or pool_windows outside 1..k_max_pool.
  explicit spec_gate(const spec_gate_params& p = {});

  // Whether a request that joins now, with `decoding` requests decoding, gets the drafter;
  // and whether attached requests keep it (false: detach them).
  bool open(int32_t decoding) const;
  // The target's step-time curve (auto mode's plain-decoding reference); null: the cost is the
  // drafter's share alone. Must outlive the gate.
  void set_step_curve(const sps_table* sps) { sps_ = sps; }
  // Feeds one finished step; may close or reopen the gate.
  void observe(const spec_gate_step& s);
  // The loop reports what it did because of the gate. Requests admitted plain while closed
  // are also the join rate the probe budget expects a probe's length from.
  void count_detached(int32_t n) { stats_.detached += n; }
  void count_plain_admitted() { ++stats_.plain_admitted; }

  const spec_gate_params& params() const { return p_; }
  const spec_gate_stats& stats() const { return stats_; }
  // The last k_window_history decided windows, oldest first (fewer before that many).
  static constexpr int32_t k_window_history = 16;
  static constexpr int32_t k_max_pool = 16;
  // Below this cost a window that accepted nothing is idle, not a loss (stats().idle_windows).
  static constexpr double k_idle_cost = 0.01;
  std::vector<spec_gate_window> recent_windows() const;
  bool closed() const { return closed_; }
  // Steps fed to observe() in auto mode (the clock of spec_gate_window::end_step).
  int64_t observed_steps() const { return observed_; }

 private:
  // Sums over a run of open steps: the decision window (steps where at least half draft), and
  // the whole probe (every open step since it opened or a window last paid).
  struct step_sums {
    int32_t steps = 0;
    int64_t request_steps = 0;
    int64_t drafting_steps = 0;
    int64_t accepted = 0;
    double drafter_s = 0.0;
    double step_s = 0.0;
    double prefill_s = 0.0;
    double sps_plain_s = 0.0;  // SPS's seconds at each step's decoding count
    void add(const spec_gate_step& s, double sps_plain);
    double gain() const { return request_steps ? static_cast<double>(accepted) / static_cast<double>(request_steps) : 0.0; }
    step_sums& operator+=(const step_sums& o);
  };
  double step_seconds(int32_t rows) const { return 1.0 / sps_->at(rows); }
  double expected_probe_steps() const;
  int32_t reprobe_interval() const;  // closed steps before the next reprobe, budget included
  double cost(const step_sums& w) const;  // o over those steps
  double plain_seconds(const step_sums& w) const;  // plain decoding's time for them (SPS-based)

  spec_gate_params p_;
  spec_gate_stats stats_;
  bool closed_ = false;
  int32_t closed_for_ = 0;      // steps since it closed
  int32_t reprobe_ = 0;         // the current reprobe interval
  int32_t open_steps_ = 0;      // steps since it (re)opened: the probe's length when it closes
  static constexpr int32_t k_load_steps = 8;
  std::array<int32_t, k_load_steps> recent_load_{};  // decoding counts of the last closed steps
  int64_t recent_n_ = 0;                             // closed steps since it closed
  // The probe budget: the loss at the last close, the last probe's length, and the join rate
  // measured on closed steps (decayed sums of joins and steps).
  double close_loss_ = 0.0;
  int32_t probe_steps_ = 0;
  int64_t admitted_seen_ = 0;
  double join_sum_ = 0.0;
  double join_steps_ = 0.0;
  int64_t join_observed_ = 0;
  bool probing_ = false;        // reopened, and no window has paid since
  int64_t observed_ = 0;        // observe calls
  std::array<spec_gate_window, k_window_history> windows_{};  // ring, stats_.windows entries written
  step_sums window_;  // the auto window
  // The windows decided since the gate opened (a probe's first one only once it paid), the
  // last pool_windows - 1 (a ring): a decision pools them with the current window.
  std::array<step_sums, k_max_pool> pool_{};
  int64_t pool_pushed_ = 0;  // windows pushed since it was cleared
  int32_t pooled_windows() const {
    return static_cast<int32_t>(std::min<int64_t>(pool_pushed_, p_.pool_windows - 1));
  }
  step_sums probe_;   // every open step of the current probe
  // The plain-step calibration: closed steps' whole seconds (prefill included) and SPS's for
  // them, both decayed so the recent steps count most.
  const sps_table* sps_ = nullptr;
  int32_t plain_steps_ = 0;
  double plain_s_ = 0.0;
  double plain_sps_s_ = 0.0;
};

// Parses the CLI / config form: "off", "auto", "auto:BUDGET" (the probe budget, in (0, 1]),
// "auto:pool=N" or "auto:BUDGET:pool=N" (windows a decision pools, 1..k_max_pool; 1 decides on
// each window alone, the rule before 2026-12-07), or a positive batch size N. Throws
// invalid_argument_error naming the forms for anything else.
spec_gate_params parse_spec_gate(const std::string& s);
// The form parse_spec_gate reads: "off", "auto[:BUDGET][:pool=N]" (defaults left out) or N.
std::string spec_gate_name(const spec_gate_params& p);

}  // namespace dspark

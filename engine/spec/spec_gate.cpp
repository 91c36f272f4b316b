// spec_gate: see spec_gate.h.
#include "engine/spec/spec_gate.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <sstream>

#include "common/error.h"
#include "common/whole_number.h"

namespace dspark {

spec_gate::spec_gate(const spec_gate_params& p) : p_(p), reprobe_(p.reprobe_steps) {
  if (p.mode == spec_gate_mode::batch && p.max_batch < 1)
    throw invalid_argument_error("spec gate: a batch limit must be >= 1, got " + std::to_string(p.max_batch));
  if (p.mode == spec_gate_mode::automatic) {
    if (p.min_steps < 1 || p.min_request_steps < 1 || p.reprobe_steps < 1 || p.reprobe_max < p.reprobe_steps)
      throw invalid_argument_error(
          "spec gate: min_steps, min_request_steps and reprobe_steps must be >= 1, reprobe_max >= reprobe_steps");
    if (!(std::abs(p.margin) <= 1.0))
      throw invalid_argument_error("spec gate: margin must be in [-1, 1]");
    if (!(p.probe_budget > 0.0 && p.probe_budget <= 1.0))
      throw invalid_argument_error("spec gate: probe_budget must be in (0, 1]");
    if (p.pool_windows < 1 || p.pool_windows > k_max_pool)
      throw invalid_argument_error("spec gate: pool_windows must be in 1.." + std::to_string(k_max_pool) + ", got " +
                                   std::to_string(p.pool_windows));
  }
}

bool spec_gate::open(int32_t decoding) const {
  switch (p_.mode) {
    case spec_gate_mode::off:
      return true;
    case spec_gate_mode::batch:
      return decoding <= p_.max_batch;
    case spec_gate_mode::automatic:
      return !closed_;
  }
  return true;
}

void spec_gate::step_sums::add(const spec_gate_step& s, double sps_plain) {
  *this += {1, s.decoding, s.drafting, s.accepted, s.drafter_s, s.step_s, s.prefill_s, sps_plain};
}

spec_gate::step_sums& spec_gate::step_sums::operator+=(const step_sums& o) {
  steps += o.steps;
  request_steps += o.request_steps;
  drafting_steps += o.drafting_steps;
  accepted += o.accepted;
  drafter_s += o.drafter_s;
  step_s += o.step_s;
  prefill_s += o.prefill_s;
  sps_plain_s += o.sps_plain_s;
  return *this;
}

double spec_gate::plain_seconds(const step_sums& w) const {
  if (sps_ == nullptr || w.sps_plain_s <= 0.0) return 0.0;
  // Calibrated: plain decoding's whole steps, prefill included, as measured while closed. Its
  // prefill share is plain decoding's own: in a closed loop each finished request brings a
  // prompt, so a speculating step, which finishes (1 + G) times as many tokens, also prefills
  // about (1 + G) times as much, and charging plain decoding the window's prefill seconds
  // would credit speculation with work it caused. Uncalibrated: the curve and the window's
  // prefill seconds (errs towards closing on a loop slower than its profile, see the header).
  if (plain_steps_ >= p_.min_steps && plain_sps_s_ > 0.0) return plain_s_ / plain_sps_s_ * w.sps_plain_s;
  return w.sps_plain_s + w.prefill_s;
}

double spec_gate::cost(const step_sums& w) const {
  const double rest = w.step_s - w.drafter_s;
  const double drafter_share = rest > 0 ? w.drafter_s / rest : 0.0;
  const double plain = plain_seconds(w);
  if (plain <= 0.0) return drafter_share;
  return std::max(drafter_share, w.step_s / plain - 1.0);
}

std::vector<spec_gate_window> spec_gate::recent_windows() const {
  const int64_t n = std::min<int64_t>(stats_.windows, k_window_history);
  std::vector<spec_gate_window> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = stats_.windows - n; i < stats_.windows; ++i)
    out.push_back(windows_[static_cast<size_t>(i % k_window_history)]);
  return out;
}

double spec_gate::expected_probe_steps() const {
  // At least as long as the last probe ran, and a window's minimum; and, once the join rate is
  // known, the steps until half of the load has joined (a window counts only steps where at
  // least half draft, and after a reprobe only the requests that join draft).
  const int32_t load = std::max(1, stats_.closed_at);
  double steps = std::max({static_cast<double>(probe_steps_), static_cast<double>(p_.min_steps),
                           std::ceil(static_cast<double>(p_.min_request_steps) / load)});
  if (join_observed_ >= p_.min_steps) {
    const double rate = join_sum_ / join_steps_;  // requests joining per step
    const double half = std::ceil(load / 2.0);
    steps = std::max(steps, rate > 0.0 ? half / rate + p_.min_steps : static_cast<double>(p_.reprobe_max));
  }
  return steps;
}

int32_t spec_gate::reprobe_interval() const {
  if (close_loss_ <= p_.probe_budget) return reprobe_;
  // A probe runs about expected_probe_steps() at the loss the closing window measured; closed
  // for N steps in between, it costs loss * probe / (N + probe) of throughput <= probe_budget.
  const double floor = std::ceil(expected_probe_steps() * (close_loss_ / p_.probe_budget - 1.0));
  return static_cast<int32_t>(std::min<double>(p_.reprobe_max, std::max<double>(reprobe_, floor)));
}

void spec_gate::observe(const spec_gate_step& s) {
  if (p_.mode == spec_gate_mode::batch) {
    if (s.decoding > p_.max_batch) ++stats_.closed_steps;
    return;
  }
  if (p_.mode != spec_gate_mode::automatic) return;
  ++observed_;
  if (closed_) {
    ++stats_.closed_steps;
    if (sps_ != nullptr && s.drafting == 0 && s.decoding > 0 && !s.one_off) {
      // A plain step: how fast this loop runs plain decoding, prefill of the requests that
      // join included, against the profile. The average follows the load the gate is closed
      // at over 64 steps, or over as many as hold about 8 joining requests when they join more
      // rarely: a joining prompt's step costs several plain ones, and at one request (a join
      // every ~50 steps) a 64-step average swung with when the last one came (SmolLM2, H100,
      // thirteenth session: 1.104 at the level's end against plain decoding's 1.033).
      constexpr double k_calibration_joins = 8.0;
      const double joins_per_step = join_steps_ > 0.0 ? join_sum_ / join_steps_ : 0.0;
      const double horizon = std::clamp(k_calibration_joins / std::max(joins_per_step, 1e-9), 64.0, 1024.0);
      const double k_decay = 1.0 - 1.0 / horizon;
      plain_s_ = plain_s_ * k_decay + s.step_s;
      plain_sps_s_ = plain_sps_s_ * k_decay + step_seconds(s.decoding);
      ++plain_steps_;
      stats_.plain_scale = plain_s_ / plain_sps_s_;
    }
    ++closed_for_;
    // How fast requests join (they are what a probe drafts with): the decoder reports each
    // one that joins while closed (count_plain_admitted).
    constexpr double k_join_decay = 1.0 - 1.0 / 64.0;
    join_sum_ = join_sum_ * k_join_decay + static_cast<double>(stats_.plain_admitted - admitted_seen_);
    join_steps_ = join_steps_ * k_join_decay + 1.0;
    ++join_observed_;
    admitted_seen_ = stats_.plain_admitted;
    stats_.reprobe_interval = reprobe_interval();
    // Reopen at half the load it closed at (speculation paid below it, or the load changed),
    // or once closed long enough to look again. The load is the mean decoding count of the last
    // k_load_steps closed steps: in a closed loop of 4 clients two requests often finish in one
    // step while their successors prefill, and a single step's count of 2 is no change of load.
    recent_load_[static_cast<size_t>(recent_n_ % k_load_steps)] = s.decoding;
    ++recent_n_;
    int64_t load_sum = 0;
    for (int32_t v : recent_load_) load_sum += v;
    const bool load_halved = recent_n_ >= k_load_steps && 2 * load_sum <= static_cast<int64_t>(stats_.closed_at) * k_load_steps;
    if (load_halved || closed_for_ >= stats_.reprobe_interval) {
      closed_ = false;
      probing_ = true;
      open_steps_ = 0;
      ++stats_.reopens;
      window_ = {};
      probe_ = {};
      pool_pushed_ = 0;
    }
    return;
  }
  ++open_steps_;
  // A one-off stall (on the 8B shape, H200, fourteenth session: the first steps of a level
  // timing cuBLASLt algorithms, 17 ms a step against 6 for plain decoding) says nothing about
  // what speculation costs from then on; a 5-step window holding one closed the gate for the
  // rest of a 16-request level.
  if (s.one_off) return;
  const double sps_plain = sps_ != nullptr && s.decoding > 0 ? step_seconds(s.decoding) : 0.0;
  if (s.decoding > 0) probe_.add(s, sps_plain);
  // A step counts once at least half of its requests draft. Fewer say little: after a reprobe
  // only the requests that join draft (a handful of 256 at first), and their gain spread over
  // the whole batch's request-steps is below the noise of the cost estimate, so the window
  // waits until the batch has turned over.
  if (s.drafting == 0 || s.decoding == 0 || 2 * s.drafting < s.decoding) return;
  // Nor does a step whose policy could not verify yet (async K's first `lag` steps): its drafts
  // went unverified for the policy's own start-up, not because speculation does not pay, and
  // a window can be as short as 4 steps (16 requests), half of them such steps. The probe's
  // cost still counts them.
  if (!s.policy_warm) return;
  window_.add(s, sps_plain);
  if (window_.steps < p_.min_steps || window_.request_steps < p_.min_request_steps) return;
  // The decision pools this window with the last ones decided before it (none for a probe's
  // first window: the ring is cleared when the gate closes or reopens, and a window enters it
  // only once the gate stayed open on it).
  // An idle window (nothing accepted, and no measurable cost: the drafts were never offered,
  // e.g. a level's first steps while the async policy's stale capacity is still 0 or nobody
  // has proposed yet) says nothing either way. Deciding on it closed the gate at G = 0 <= o =
  // 0.001 at the start of a 64-request level on the GPU (tenth session), after which a diluted
  // probe kept it closed for the level. It is dropped and the next window decides; where drafting
  // stays idle the gate stays open at under k_idle_cost of throughput.
  const double own_cost = cost(window_);
  if (window_.accepted == 0 && own_cost < k_idle_cost) {
    ++stats_.idle_windows;
    window_ = {};
    return;
  }
  const int32_t pooled = pooled_windows();
  step_sums decided = window_;
  for (int32_t i = 0; i < pooled; ++i) decided += pool_[static_cast<size_t>(i)];
  const double gain = decided.gain();
  const double o = cost(decided);
  stats_.last_gain = gain;
  stats_.last_cost = o;
  const bool close = gain <= o + p_.margin;
  windows_[static_cast<size_t>(stats_.windows % k_window_history)] = {
      observed_, window_.steps, window_.request_steps, window_.drafting_steps, window_.accepted, window_.step_s,
      window_.drafter_s, window_.prefill_s, plain_seconds(window_), window_.gain(), own_cost, gain, o,
      pooled + 1, close, probing_};
  ++stats_.windows;
  if (close) {
    // A close right after a reopening waits twice as long before the next look.
    if (probing_) reprobe_ = std::min(p_.reprobe_max, 2 * reprobe_);
    // ... and long enough that the next probe costs at most probe_budget (reprobe_interval()),
    // at the loss of this whole probe or of its window, whichever is larger.
    const auto loss = [](double g, double c) { return std::max(0.0, (c - g) / (1.0 + c)); };
    close_loss_ = std::max(loss(gain, o), loss(probe_.gain(), cost(probe_)));
    stats_.probe_loss = close_loss_;
    probe_steps_ = open_steps_;
    stats_.close_gain = gain;
    stats_.close_cost = o;
    stats_.close_window_steps = decided.steps;
    stats_.close_window_request_steps = decided.request_steps;
    stats_.close_open_steps = open_steps_;
    admitted_seen_ = stats_.plain_admitted;
    probing_ = false;
    closed_ = true;
    closed_for_ = 0;
    recent_n_ = 0;
    recent_load_.fill(0);
    ++stats_.closes;
    // the load it closed at is the current window's: the pooled ones may be older
    stats_.closed_at = static_cast<int32_t>(std::lround(static_cast<double>(window_.request_steps) / window_.steps));
    stats_.reprobe_interval = reprobe_interval();
    pool_pushed_ = 0;
  } else {
    reprobe_ = p_.reprobe_steps;  // speculation pays here: a later close looks again soon
    probing_ = false;
    open_steps_ = 0;  // a later close's loss began after this window
    probe_ = {};
    if (p_.pool_windows > 1) pool_[static_cast<size_t>(pool_pushed_++ % (p_.pool_windows - 1))] = window_;
  }
  window_ = {};
}

spec_gate_params parse_spec_gate(const std::string& s) {
  spec_gate_params p;
  if (s == "off") return p;
  if (s == "auto") {
    p.mode = spec_gate_mode::automatic;
    return p;
  }
  if (s.rfind("auto:", 0) == 0) {  // auto:BUDGET, auto:pool=N or auto:BUDGET:pool=N
    const std::string form_error = "spec gate auto:BUDGET[:pool=N] needs a probe budget in (0, 1] and a pool of 1.." +
                                   std::to_string(spec_gate::k_max_pool) + " windows, got '" + s + "'";
    const std::string rest = s.substr(5);
    const bool pool_only = rest.rfind("pool=", 0) == 0;
    const size_t colon = pool_only ? std::string::npos : rest.find(':');
    const std::string budget_item = pool_only ? "" : rest.substr(0, colon);
    const std::string pool_item = pool_only ? rest : colon == std::string::npos ? "" : rest.substr(colon + 1);
    p.mode = spec_gate_mode::automatic;
    if (!pool_only) {
      const std::optional<double> budget = whole_number<double>(budget_item);
      if (!budget || !(*budget > 0.0 && *budget <= 1.0)) throw invalid_argument_error(form_error);
      p.probe_budget = *budget;
    }
    if (pool_only || colon != std::string::npos) {
      if (pool_item.rfind("pool=", 0) != 0) throw invalid_argument_error(form_error);
      const std::optional<int32_t> n = whole_number<int32_t>(pool_item.substr(5));
      if (!n || *n < 1 || *n > spec_gate::k_max_pool) throw invalid_argument_error(form_error);
      p.pool_windows = *n;
    }
    return p;
  }
  const std::optional<int32_t> n = whole_number<int32_t>(s);
  if (!n || *n < 1)
    throw invalid_argument_error("spec gate must be off, auto, auto:BUDGET or a batch size >= 1, got '" + s + "'");
  p.mode = spec_gate_mode::batch;
  p.max_batch = *n;
  return p;
}

std::string spec_gate_name(const spec_gate_params& p) {
  switch (p.mode) {
    case spec_gate_mode::off:
      return "off";
    case spec_gate_mode::batch:
      return std::to_string(p.max_batch);
    case spec_gate_mode::automatic: {
      std::ostringstream o;
      o << "auto";
      if (p.probe_budget != spec_gate_params{}.probe_budget) o << ':' << p.probe_budget;
      if (p.pool_windows != spec_gate_params{}.pool_windows) o << ":pool=" << p.pool_windows;
      return o.str();
    }
  }
  return "off";
}

}  // namespace dspark

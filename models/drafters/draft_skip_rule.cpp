// draft_skip_rule: see draft_skip_rule.h.
#include "models/drafters/draft_skip_rule.h"

#include <algorithm>
#include <string>

#include "common/error.h"

namespace dspark {

draft_skip_rule::draft_skip_rule(const draft_skip_params& p) : p_(p) {
  if (!(p.draft_cost >= 0.0 && p.draft_cost < 1e6))
    throw invalid_argument_error("draft skip: draft_cost must be >= 0, got " + std::to_string(p.draft_cost));
  if (!(p.ema_alpha > 0.0 && p.ema_alpha <= 1.0))
    throw invalid_argument_error("draft skip: ema_alpha must be in (0, 1], got " + std::to_string(p.ema_alpha));
  if (p.warmup_rounds < 0) throw invalid_argument_error("draft skip: warmup_rounds must be >= 0");
  if (p.probe_interval < 1 || p.max_probe_interval < p.probe_interval)
    throw invalid_argument_error("draft skip: need 1 <= probe_interval <= max_probe_interval");
}

double draft_skip_rule::expected_accepted(const draft_skip_state& s) {
  return s.conf >= 0.0 ? 0.5 * (s.ema + s.conf) : s.ema;
}

draft_skip_decision draft_skip_rule::decide(draft_skip_state& s) const {
  if (s.interval == 0) s.interval = p_.probe_interval;
  if (s.observed < p_.warmup_rounds || expected_accepted(s) > p_.draft_cost) {
    s.skipped = 0;
    s.interval = p_.probe_interval;
    return draft_skip_decision::draft;
  }
  if (s.skipped < s.interval) {
    ++s.skipped;
    return draft_skip_decision::skip;
  }
  // Probe: draft once after `interval` skipped rounds, and wait twice as long for the next.
  s.skipped = 0;
  s.interval = std::min(2 * s.interval, p_.max_probe_interval);
  return draft_skip_decision::probe;
}

void draft_skip_rule::observe(draft_skip_state& s, int32_t accepted, double conf) const {
  const double a = static_cast<double>(std::max(accepted, 0));
  s.ema = s.observed == 0 ? a : s.ema + p_.ema_alpha * (a - s.ema);
  s.conf = conf;
  ++s.observed;
}

void draft_skip_rule::set_draft_cost(double c) {
  if (!(c >= 0.0 && c < 1e6)) throw invalid_argument_error("draft skip: draft_cost must be >= 0, got " + std::to_string(c));
  p_.draft_cost = c;
}

}  // namespace dspark

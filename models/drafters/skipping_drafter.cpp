// skipping_drafter: see skipping_drafter.h.
#include "models/drafters/skipping_drafter.h"

#include <algorithm>

#include <string>

#include "common/error.h"
#include "engine/spec/draft_batch.h"

namespace dspark {

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// sum_k c_1 * ... * c_k: the expected accepted drafts of a chain under its own confidences.
// Writes into cum[k] the head's expected accepted drafts of the chain's first k + 1 drafts,
// sum_{j <= k} c_1 * ... * c_j; returns the chain length written (at most cum.size()).
size_t expected_prefixes(std::span<const float> c, std::span<double> cum) {
  double a = 1.0, sum = 0.0;
  const size_t n = std::min(c.size(), cum.size());
  for (size_t k = 0; k < n; ++k) {
    a *= static_cast<double>(c[k]);
    sum += a;
    cum[k] = sum;
  }
  return n;
}

}  // namespace

skipping_drafter::skipping_drafter(std::unique_ptr<drafter> inner, int32_t max_slots, const draft_skip_params& p,
                                   bool enabled)
    : inner_(std::move(inner)), rule_(p), meter_(0.2, p.draft_cost), enabled_(enabled) {
  if (!inner_) throw invalid_argument_error("skipping_drafter: inner drafter is null");
  if (max_slots < 1) throw invalid_argument_error("skipping_drafter: max_slots must be >= 1");
  state_.resize(static_cast<size_t>(max_slots));
  drafted_.assign(static_cast<size_t>(max_slots), 0);
  pending_len_.assign(static_cast<size_t>(max_slots), -1);
  pending_cum_.assign(static_cast<size_t>(max_slots) * k_max_chain, 0.0);
  sub_.reserve(static_cast<size_t>(max_slots));
}

int32_t skipping_drafter::checked(int32_t slot) const {
  if (slot < 0 || slot >= static_cast<int32_t>(state_.size()))
    throw invalid_argument_error("skipping_drafter: slot " + std::to_string(slot) + " out of range");
  return slot;
}

void skipping_drafter::begin(int32_t slot, std::span<const int32_t> prompt) {
  const size_t s = static_cast<size_t>(checked(slot));
  state_[s] = draft_skip_state{};
  drafted_[s] = 0;
  inner_->begin(slot, prompt);
}

void skipping_drafter::propose(std::span<const propose_request> batch, draft_batch& out) {
  meter_.round_start(std::chrono::duration<double>(clock_type::now().time_since_epoch()).count());
  if (rule_.params().measured_cost) rule_.set_draft_cost(meter_.cost());
  sub_.clear();
  int32_t n_drafted = 0;
  for (const propose_request& r : batch) {
    const size_t s = static_cast<size_t>(checked(r.slot));
    drafted_[s] = 0;
    if (r.max_drafts <= 0) {  // nothing to draft: no decision, no information
      sub_.push_back(r);
      continue;
    }
    ++stats_.request_rounds;
    if (enabled_) {
      const draft_skip_decision d = rule_.decide(state_[s]);
      if (d == draft_skip_decision::skip) {
        ++stats_.skipped_rounds;
        stats_.drafts_saved += r.max_drafts;
        continue;
      }
      if (d == draft_skip_decision::probe) ++stats_.probe_rounds;
    }
    drafted_[s] = 1;
    ++n_drafted;
    sub_.push_back(r);
  }
  const auto t0 = clock_type::now();
  if (!sub_.empty()) inner_->propose(sub_, out);
  const double dt = sub_.empty() ? 0.0 : seconds_since(t0);
  stats_.propose_s += dt;
  meter_.round_drafted(dt, n_drafted, static_cast<int32_t>(batch.size()));
  if (sub_.empty()) return;
  const bool head = inner_->caps().has_confidence;
  for (const propose_request& r : sub_) {
    const size_t s = static_cast<size_t>(r.slot);
    pending_len_[s] = head && drafted_[s] ? static_cast<int32_t>(expected_prefixes(
                                                  out.confidences(r.slot), {pending_cum_.data() + s * k_max_chain, k_max_chain}))
                                          : -1;
  }
}

void skipping_drafter::on_commit(int32_t slot, const commit_info& c) {
  const size_t s = static_cast<size_t>(checked(slot));
  const auto t0 = clock_type::now();
  inner_->on_commit(slot, c);
  const double dt = seconds_since(t0);
  stats_.commit_s += dt;
  meter_.committed(dt);
  // A round's commit carries its tokens; prefill chunks (no tokens) and x0 (not drafted) do not
  // count.
  if (drafted_[s] && !c.tokens.empty()) {
    // The head's expectation counts only the drafts the policy verified (n_proposed): a round
    // whose drafts the scheduler did not admit yields nothing however confident the head was,
    // so a request the policy keeps declining stops drafting (with probes) like a hard one.
    double conf = -1.0;
    if (pending_len_[s] >= 0) {
      const int32_t l = std::min(c.n_proposed, pending_len_[s]);
      conf = l > 0 ? pending_cum_[s * k_max_chain + static_cast<size_t>(l - 1)] : 0.0;
    }
    rule_.observe(state_[s], c.n_accepted, conf);
    drafted_[s] = 0;
  }
}

void skipping_drafter::rollback(int32_t slot, int32_t n_context) {
  drafted_[static_cast<size_t>(checked(slot))] = 0;  // the round was abandoned: no information
  inner_->rollback(slot, n_context);
}

void skipping_drafter::end(int32_t slot) {
  drafted_[static_cast<size_t>(checked(slot))] = 0;
  inner_->end(slot);
}

bool parse_draft_skip(const std::string& s, draft_skip_params& p) {
  if (s == "off") return false;
  if (s == "auto") {
    p.measured_cost = true;
    return true;
  }
  if (s.rfind("auto:", 0) == 0) {
    p.measured_cost = false;
    const std::string v = s.substr(5);
    double cost = -1.0;
    try {
      size_t used = 0;
      cost = std::stod(v, &used);
      if (used != v.size()) cost = -1.0;
    } catch (const std::exception&) {
      cost = -1.0;
    }
    if (!(cost >= 0.0 && cost <= 64.0))
      throw invalid_argument_error("draft-skip auto:COST needs COST in [0, 64] (draft cost / verify step), got '" + v + "'");
    p.draft_cost = cost;
    return true;
  }
  throw invalid_argument_error("draft-skip must be off, auto or auto:COST, got '" + s + "'");
}

}  // namespace dspark

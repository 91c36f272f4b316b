// load_loop: one closed-loop load level over spec_decoder (see load_loop.h).
#include "engine/spec/load_loop.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <string_view>

#include "common/error.h"

namespace dspark {

namespace {

using clock_type = std::chrono::steady_clock;

double since(clock_type::time_point t) { return std::chrono::duration<double>(clock_type::now() - t).count(); }

load_sample sample_of(const spec_result& r) {
  load_sample s;
  s.generated = r.gen.stats.generated_tokens;
  s.ttft_s = r.gen.stats.ttft_s;
  s.decode_s = r.gen.stats.decode_s;
  s.rounds = r.metrics.verify_steps();
  s.verified = r.metrics.draft_tokens_verified();
  s.accepted = r.metrics.draft_tokens_accepted();
  return s;
}

}  // namespace

double nearest_rank_quantile(std::vector<double> v, double q) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double pos = std::clamp(q, 0.0, 1.0) * static_cast<double>(v.size() - 1);
  return v[static_cast<size_t>(pos + 0.5)];
}

double load_level_result::aggregate_tokens_per_s() const {
  return window_s > 0 ? static_cast<double>(window_tokens) / window_s : 0.0;
}

double load_level_result::per_user_tokens_per_s() const {
  double sum = 0.0;
  int64_t n = 0;
  for (const load_sample& s : samples)
    if (s.generated >= 2 && s.decode_s > 0) {
      sum += static_cast<double>(s.generated - 1) / s.decode_s;
      ++n;
    }
  return n ? sum / static_cast<double>(n) : 0.0;
}

double load_level_result::tpot_s(double q) const {
  std::vector<double> v;
  for (const load_sample& s : samples)
    if (s.generated >= 2 && s.decode_s > 0) v.push_back(s.decode_s / static_cast<double>(s.generated - 1));
  return nearest_rank_quantile(std::move(v), q);
}

double load_level_result::ttft_s(double q) const {
  std::vector<double> v;
  for (const load_sample& s : samples) v.push_back(s.ttft_s);
  return nearest_rank_quantile(std::move(v), q);
}

double load_level_result::tau() const {
  int64_t rounds = 0, accepted = 0;
  for (const load_sample& s : samples) {
    rounds += s.rounds;
    accepted += s.accepted;
  }
  return rounds ? 1.0 + static_cast<double>(accepted) / static_cast<double>(rounds) : 1.0;
}

double load_level_result::mean_verify_length() const {
  int64_t rounds = 0, verified = 0;
  for (const load_sample& s : samples) {
    rounds += s.rounds;
    verified += s.verified;
  }
  return rounds ? static_cast<double>(verified) / static_cast<double>(rounds) : 0.0;
}

double load_level_result::mean_active() const {
  return steps ? static_cast<double>(active_sum) / static_cast<double>(steps) : 0.0;
}

nlohmann::json load_level_result::to_json() const {
  return {{"concurrency", concurrency},
          {"requests", samples.size()},
          {"window_s", window_s},
          {"window_tokens", window_tokens},
          {"steps", steps},
          {"mean_active", mean_active()},
          {"cancelled_at_close", cancelled},
          {"aggregate_tokens_per_s", aggregate_tokens_per_s()},
          {"per_user_tokens_per_s", per_user_tokens_per_s()},
          {"tpot_ms_p50", tpot_s(0.5) * 1e3},
          {"tpot_ms_p90", tpot_s(0.9) * 1e3},
          {"tpot_ms_p99", tpot_s(0.99) * 1e3},
          {"ttft_ms_p50", ttft_s(0.5) * 1e3},
          {"tau", tau()},
          {"mean_verify_length", mean_verify_length()}};
}

load_level_result run_load_level(spec_decoder& dec, std::span<const std::vector<int32_t>> prompts,
                                 size_t& next_prompt, const load_level_options& o) {
  const int32_t c = o.concurrency;
  if (c < 1 || c > dec.max_requests())
    throw invalid_argument_error("load level: concurrency " + std::to_string(c) + " outside [1, max_requests = " +
                                 std::to_string(dec.max_requests()) + "]");
  if (prompts.empty()) throw invalid_argument_error("load level: no prompts");
  if (o.measured_requests < 1) throw invalid_argument_error("load level: measured_requests must be >= 1");
  if (!o.max_tokens.empty() && o.max_tokens.size() != prompts.size())
    throw invalid_argument_error("load level: max_tokens must have one entry per prompt");
  const int32_t warmup = o.warmup_requests < 0 ? c : o.warmup_requests;

  int64_t tokens = 0;  // kept tokens committed so far, every request
  const token_callback count = [&tokens](int32_t id, std::string_view) {
    if (id >= 0) ++tokens;
  };
  std::vector<uint8_t> started_inside(static_cast<size_t>(dec.max_requests()), 0);
  std::vector<int32_t> live, finished;
  live.reserve(static_cast<size_t>(c));
  finished.reserve(static_cast<size_t>(c));
  bool open = false;
  auto submit = [&] {
    const size_t i = next_prompt++ % prompts.size();
    sampling_params p = o.params;
    if (!o.max_tokens.empty()) p.max_tokens = o.max_tokens[i];
    const int32_t id = dec.add(prompts[i], p, count);
    started_inside[static_cast<size_t>(id)] = open ? 1 : 0;
    live.push_back(id);
  };

  load_level_result res;
  res.concurrency = c;
  res.samples.reserve(static_cast<size_t>(o.measured_requests));
  clock_type::time_point t0;
  int64_t tokens0 = 0;
  auto open_window = [&] {
    open = true;
    t0 = clock_type::now();
    tokens0 = tokens;
    if (o.on_window_open) o.on_window_open();
  };
  int64_t warm_done = 0;
  if (warmup == 0) open_window();
  for (int32_t i = 0; i < c; ++i) submit();
  const size_t enough_by_time = static_cast<size_t>(std::min(o.measured_requests, c));
  for (;;) {
    const int64_t held = static_cast<int64_t>(live.size());
    dec.step();
    if (open) {
      ++res.steps;
      res.active_sum += held;
    }
    finished.clear();
    for (size_t k = 0; k < live.size();) {
      if (!dec.finished(live[k])) {
        ++k;
        continue;
      }
      finished.push_back(live[k]);
      live[k] = live.back();
      live.pop_back();
    }
    const bool was_open = open;
    for (int32_t id : finished) {
      const spec_result r = dec.take(id);
      if (was_open && started_inside[static_cast<size_t>(id)]) res.samples.push_back(sample_of(r));
      else if (!was_open && ++warm_done >= warmup && !open) open_window();
    }
    if (was_open) {
      const bool by_count = res.samples.size() >= static_cast<size_t>(o.measured_requests);
      const bool by_time = o.max_seconds > 0 && since(t0) >= o.max_seconds && res.samples.size() >= enough_by_time;
      if (by_count || by_time) break;
    }
    for (size_t k = 0; k < finished.size(); ++k) submit();  // each client's next request
  }
  res.window_s = since(t0);
  res.window_tokens = tokens - tokens0;
  if (o.on_window_close) o.on_window_close();
  for (int32_t id : live) {
    dec.cancel(id);
    (void)dec.take(id);
    ++res.cancelled;
  }
  return res;
}

}  // namespace dspark

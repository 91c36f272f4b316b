// Policy construction by name: see policy_factory.h.
#include "engine/spec/policy_factory.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <vector>

#include "common/error.h"
#include "common/whole_number.h"
#include "models/arch/model_config.h"
#include "engine/spec/async_capacity_policy.h"
#include "engine/spec/step_profile.h"

namespace dspark {

policy_name parse_policy_name(const std::string& name) {
  policy_name p;
  if (name == "fixed") p.kind = policy_kind::fixed;
  else if (name == "threshold") p.kind = policy_kind::threshold;
  else if (name == "scheduled") p.kind = policy_kind::scheduled;
  else if (name == "async") p.kind = policy_kind::async;
  else if (name.rfind("async:", 0) == 0) {
    p.kind = policy_kind::async;
    const std::string lag = name.substr(6);
    const std::optional<int32_t> v = whole_number<int32_t>(lag);
    if (!v || *v < 1 || *v > 8) throw invalid_argument_error("policy async:LAG needs LAG in [1, 8], got '" + lag + "'");
    p.lag = *v;
  } else {
    throw invalid_argument_error("policy must be fixed, threshold, scheduled or async[:LAG], got '" + name + "'");
  }
  return p;
}

std::string default_sps_profile_path(const std::string& key) {
  const char* xdg = std::getenv("XDG_CACHE_HOME");
  const char* home = std::getenv("HOME");
  std::filesystem::path dir = xdg && *xdg ? std::filesystem::path(xdg) : std::filesystem::path(home ? home : "/tmp") / ".cache";
  dir /= "dspark";
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  return (dir / ("sps-" + std::to_string(std::hash<std::string>{}(key)) + ".json")).string();
}

namespace {

// SPS(R, B) for verify steps of up to max_slots * (gamma + 1) tokens, measured on the target.
sps_table profile_sps(const model_config& c, const policy_build_options& o) {
  backend& target = *o.target;
  const backend_limits& lim = target.limits();
  step_profile_options po;
  po.max_tokens = std::min({o.max_slots * (o.gamma + 1), lim.max_tokens_per_step, lim.max_logit_rows});
  po.max_sequences = o.max_slots;
  po.tokens_per_sequence = o.gamma + 1;
  // The context leaves room for the most a profiled sequence grows.
  const int32_t per_seq = step_profile_growth(step_profile_grid(po, lim.n_seq_max));
  po.context_lengths = {std::max(1, std::min(256, lim.n_ctx - per_seq - 1))};
  const std::string key = o.device + " | " + c.name + " L" + std::to_string(c.n_layer) + " d" +
                          std::to_string(c.n_embd) + " V" + std::to_string(c.n_vocab) + " seqs" +
                          std::to_string(po.max_sequences) + " B" + std::to_string(po.max_tokens);
  const std::string path = o.profile_path.empty() ? default_sps_profile_path(key) : o.profile_path;
  sps_table t = load_or_measure_step_profile(target, po, key, path).table(po.context_lengths[0]);
  // DSPARK_SPS_ONE_CURVE=1: price every step on the last row alone (one token a sequence up to
  // the slots, as the profile did before it had rows), to A/B the rows under load.
  const char* one = std::getenv("DSPARK_SPS_ONE_CURVE");
  if (one != nullptr && std::string(one) == "1") return sps_table(std::vector<sps_table::row>{t.rows().back()});
  return t;
}

}  // namespace

std::unique_ptr<spec_policy> make_policy_by_name(const std::string& name, const model_config& m,
                                                 const policy_build_options& o) {
  const policy_name p = parse_policy_name(name);
  if (p.kind == policy_kind::fixed) return std::make_unique<fixed_gamma_policy>(o.gamma);
  if (p.kind == policy_kind::threshold) return std::make_unique<threshold_policy>(o.gamma, static_cast<float>(o.threshold));
  if (!o.target) throw invalid_argument_error("policy " + name + " needs the target backend's step-time profile (not available here)");
  sps_table sps = profile_sps(m, o);
  if (p.kind == policy_kind::scheduled)
    return std::make_unique<confidence_scheduled_policy>(o.gamma, o.max_slots, std::move(sps));
  return std::make_unique<async_capacity_policy>(o.gamma, o.max_slots, std::move(sps), p.lag);
}

}  // namespace dspark

// Builds a spec_policy from its configured name: the one place where "fixed", "threshold",
// "scheduled" and "async[:LAG]" become policy objects, shared by the offline commands
// (`dspark generate|bench-spec|eval`, services/dspark/spec_cli.cpp) and the server
// (`dspark serve|verifier`, actors/server.h's policy factory and config/server_config.cpp's
// validation), so both accept exactly the same names.
//
// scheduled and async need SPS(R, B), the target's verify step-time curve: it is measured on
// the live target backend at start-up (engine/spec/step_profile.h) for verify steps of up to
// max_slots x (gamma + 1) tokens, at sequence counts 1, 2, 4, ... max_slots, at context 256,
// and cached as JSON at `profile_path` (default
// $XDG_CACHE_HOME/dspark/ or ~/.cache/dspark/, one file per device + model + shape key).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "engine/backend.h"
#include "engine/spec/policy.h"

namespace dspark {

struct model_config;

enum class policy_kind { fixed, threshold, scheduled, async };

struct policy_name {
  policy_kind kind = policy_kind::fixed;
  int32_t lag = 2;  // async only: the step whose confidences set the capacity, [1, 8]
};

// Parses "fixed", "threshold", "scheduled", "async" or "async:LAG"; invalid_argument_error
// naming the valid forms otherwise.
policy_name parse_policy_name(const std::string& name);

struct policy_build_options {
  int32_t gamma = 4;          // [1, 64]
  double threshold = 0.0;     // threshold policy, [0, 1]
  int32_t max_slots = 1;      // requests decoded together
  backend* target = nullptr;  // needed by scheduled / async (the step-time profile)
  std::string device;         // names the device in the profile cache key ("cpu 2 threads q8", ...)
  std::string profile_path;   // "" = default_sps_profile_path(key)
};

// The named policy. invalid_argument_error for a bad name, or scheduled/async without a target.
std::unique_ptr<spec_policy> make_policy_by_name(const std::string& name, const model_config& m,
                                                 const policy_build_options& o);

// Where a profile with this key is cached when no path is given (creates the folder).
std::string default_sps_profile_path(const std::string& key);

}  // namespace dspark

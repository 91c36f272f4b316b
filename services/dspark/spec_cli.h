// Speculative-decoding options shared by `dspark generate` and `dspark bench-spec`:
//   --draft none|ngram|layerskip:K   the drafter (default none); trained drafters:
//           dspark:DIR|dflash:DIR|eagle3:DIR|mtp1:DIR   (docs/drafter-format.md; CPU compute)
//   --gamma G                        drafts verified per step (default 4)
//   --threshold C                    truncate chains at cumulative confidence < C (default 0)
//   --ngram-min N, --ngram-max N     n-gram match lengths (default 1..4)
//   --draft-skip off|auto[:COST]     difficulty-aware draft skipping (skipping_drafter.h)
//   --draft-threads N                CPU threads of a trained drafter (default: --threads)
//
// generate_command.cpp adds spec_option_specs() to its options and, when --draft is not
// "none", calls run_spec_generate() instead of generate(); --json adds spec_stats_json().
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/generator.h"
#include "engine/spec/metrics.h"
#include "engine/spec/policy.h"
#include "engine/spec/spec_decoder.h"
#include "models/drafters/drafter.h"
#include "models/drafters/skipping_drafter.h"
#include "services/dspark/backend_factory.h"
#include "services/dspark/cli_args.h"

namespace dspark {
class model;
}

namespace dspark::cli {

// The options above, for a subcommand's option table.
std::vector<option_spec> spec_option_specs();

// A drafter and a policy built from the options; drafter null for --draft none.
struct spec_setup {
  std::string draft = "none";
  std::unique_ptr<drafter> d;
  std::unique_ptr<spec_policy> policy;
  // The --draft-skip wrapper around d (models/drafters/skipping_drafter.h), null without one:
  // its stats() go into a run's metrics (spec_metrics::add_draft_skip).
  skipping_drafter* skip = nullptr;
};

// Parses --draft/--gamma/--policy/--threshold/--ngram-*; usage_error for a bad value (naming
// the valid forms and ranges). A layer-skip drafter gets its own backend, built like the
// target's (backend_factory.h) from `be` with max_slots sequences. --policy scheduled|async
// profiles SPS(R, B) on `target` at start-up (engine/spec/step_profile.h; cached in
// --sps-profile), so they need it; without a target they are a usage_error.
spec_setup make_spec_setup(const parsed_args& a, const model& m, const backend_choice& be,
                           int32_t max_slots, backend* target = nullptr);

// The policy named by --policy: fixed, threshold, scheduled or async[:LAG] (see above).
std::unique_ptr<spec_policy> make_policy(const std::string& name, int32_t gamma, double threshold, const model& m,
                                         const backend_choice& be, int32_t max_slots, backend* target,
                                         const std::optional<std::string>& sps_path);

// One prompt through the speculative decoder (the counterpart of generate()).
spec_result run_spec_generate(const model& m, backend& be, spec_setup& s, std::span<const int32_t> prompt,
                              const sampling_params& params, const token_callback& on_token = {});

// The --json stats the issue asks for: acceptance_length, verify_steps, draft_tokens_proposed,
// draft_tokens_accepted (plus verified drafts and per-position acceptance).
nlohmann::json spec_stats_json(const spec_metrics& m);

// One "  draft skip ..." line of a text report from m.draft_skip(); nothing without --draft-skip.
void print_draft_skip(const spec_setup& s, const spec_metrics& m);

}  // namespace dspark::cli

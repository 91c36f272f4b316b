// Loads a trained drafter folder (dspark, dflash, eagle3, mtp1) for a target model: config,
// target check, weights, and the drafter class its kind runs on.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "models/arch/llama_weights.h"
#include "models/arch/model_config.h"
#include "models/drafters/drafter.h"
#include "models/drafters/drafter_compute.h"
#include "models/drafters/drafter_config.h"

namespace dspark {

// Throws format_error for a malformed folder and invalid_argument_error when the folder's kind
// differs from `expect` (when given) or the drafter was trained for another target. `tw` and
// `tc` must outlive the drafter (it reads the target's embedding and LM head in place).
std::unique_ptr<drafter> load_trained_drafter(const std::string& dir, const model_config& tc, const llama_weights& tw,
                                              const drafter_runtime_params& p,
                                              std::optional<drafter_kind> expect = std::nullopt);

}  // namespace dspark

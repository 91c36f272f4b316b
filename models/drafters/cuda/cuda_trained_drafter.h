// Loads a trained drafter folder onto the GPU: dspark and dflash with a vanilla or no Markov
// head (cuda_block_drafter.h), eagle3 and mtp1 (cuda_chain_drafter.h). The RNN head stays on
// the CPU drafter of models/drafters/trained_drafter.h.
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

// The GPU drafter for `dir`, or nullptr (with the reason in *why_not) when its config does not
// run on the GPU. Errors as load_trained_drafter's (format_error, invalid_argument_error), plus
// cuda_error from the device.
std::unique_ptr<drafter> load_trained_drafter_cuda(const std::string& dir, const model_config& tc,
                                                   const llama_weights& tw, const drafter_runtime_params& p,
                                                   std::optional<drafter_kind> expect, std::string* why_not);

}  // namespace dspark

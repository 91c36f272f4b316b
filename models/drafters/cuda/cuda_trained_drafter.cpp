// load_trained_drafter_cuda: folder -> GPU drafter (or nullptr when the kind stays on the CPU).
#include "models/drafters/cuda/cuda_trained_drafter.h"

#include "common/error.h"
#include "models/drafters/cuda/cuda_block_drafter.h"
#include "models/drafters/cuda/cuda_chain_drafter.h"
#include "models/drafters/drafter_weights.h"

namespace dspark {

std::unique_ptr<drafter> load_trained_drafter_cuda(const std::string& dir, const model_config& tc,
                                                   const llama_weights& tw, const drafter_runtime_params& p,
                                                   std::optional<drafter_kind> expect, std::string* why_not) {
  drafter_config c = load_drafter_config(dir);
  if (expect && *expect != c.kind)
    throw invalid_argument_error(std::string("drafter: ") + dir + " holds a " + drafter_kind_name(c.kind) +
                                 " drafter, not " + drafter_kind_name(*expect));
  check_drafter_target(c, tc);
  const drafter_target_head head{tw.token_embd, tw.output};
  if (c.block_drafter()) {
    if (!cuda_block_drafter_supports(c, why_not)) return nullptr;
    return std::make_unique<cuda_block_drafter>(c, load_drafter_weights(dir, c), head, p);
  }
  if (!cuda_chain_drafter_supports(c, why_not)) return nullptr;
  return std::make_unique<cuda_chain_drafter>(c, load_drafter_weights(dir, c), head, p);
}

}  // namespace dspark

// load_trained_drafter: folder -> drafter.
#include "models/drafters/trained_drafter.h"

#include "common/error.h"
#include "models/drafters/drafter_weights.h"
#include "models/drafters/dspark_drafter.h"
#include "models/drafters/eagle3_drafter.h"

namespace dspark {

std::unique_ptr<drafter> load_trained_drafter(const std::string& dir, const model_config& tc, const llama_weights& tw,
                                              const drafter_runtime_params& p, std::optional<drafter_kind> expect) {
  drafter_config c = load_drafter_config(dir);
  if (expect && *expect != c.kind)
    throw invalid_argument_error(std::string("drafter: ") + dir + " holds a " + drafter_kind_name(c.kind) +
                                 " drafter, not " + drafter_kind_name(*expect));
  check_drafter_target(c, tc);
  drafter_weights w = load_drafter_weights(dir, c);
  const drafter_target_head head{tw.token_embd, tw.output};
  if (c.block_drafter()) return std::make_unique<dspark_drafter>(std::move(c), std::move(w), head, p);
  return std::make_unique<eagle3_drafter>(std::move(c), std::move(w), head, p);
}

}  // namespace dspark

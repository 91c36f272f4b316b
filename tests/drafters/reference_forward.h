// A straightforward double-precision re-implementation of the drafter forward of
// docs/drafter-format.md, written from the doc alone (it shares only the loaded weights with
// models/drafters/): the independent reference the drafters are checked against.
#pragma once

#include <cstdint>
#include <vector>

#include "models/drafters/drafter_config.h"
#include "models/drafters/drafter_weights.h"

namespace dspark::test {

using dvec = std::vector<double>;

struct ref_target {
  std::vector<float> embed;    // [V, d]
  std::vector<float> lm_head;  // [V, d]
};

struct ref_block_out {
  std::vector<dvec> base;    // [g][V] U_k
  std::vector<dvec> logits;  // [g][V] U_k + B_k
  dvec conf;                 // [g] z_k before calibration (confidence only)
};

// dspark/dflash: context features F [s][m*d] for positions 0..s-1, anchor at s, prev[k] the
// previous token of slot k (prev[0] = anchor); g = prev.size() slots are evaluated.
ref_block_out ref_block(const drafter_config& c, const drafter_weights& w, const ref_target& t,
                        const std::vector<std::vector<float>>& F, int32_t anchor, const std::vector<int32_t>& prev);

// eagle3/mtp1: features F [P][m*d] of positions 0..P-1, tokens [P+1] = token(1..P+1)... i.e.
// tokens[t] pairs with feature row t (the last is the anchor), chain = forced x_1..x_{g-1}.
// Returns logits [g][V] for x_1..x_g.
std::vector<dvec> ref_eagle(const drafter_config& c, const drafter_weights& w, const ref_target& t,
                            const std::vector<std::vector<float>>& F, const std::vector<int32_t>& tokens,
                            const std::vector<int32_t>& chain);

}  // namespace dspark::test

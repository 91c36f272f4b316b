// The candidate order both confidence-driven schedulers walk: every (request r, draft j) with
// survival a_{r,j} = c_{r,1} * ... * c_{r,j} > 0, sorted by a descending.
//
// a is non-increasing in j, and ties are broken by (r ascending, j ascending), so any prefix of
// the order is prefix-closed per request: (r, j) is never admitted before (r, j - 1). That is
// what lets a scheduler turn "the first n candidates" into per-request verify lengths.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/spec/policy.h"

namespace dspark {

// Verify cap of one request: its proposed drafts, limited by max_verify and gamma.
int32_t verify_cap(const policy_request& r, int32_t gamma);

// Fills `out` (cleared first; the caller reserves max_requests * gamma so this allocates
// nothing) with the batch's candidates in scheduling order.
void collect_survival_order(std::span<const policy_request> batch, int32_t gamma,
                            std::vector<survival_candidate>& out);

}  // namespace dspark

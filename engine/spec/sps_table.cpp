#include "engine/spec/sps_table.h"

#include <cmath>
#include <string>
#include <utility>

#include "common/error.h"

namespace dspark {

sps_table::sps_table(std::vector<double> sps) : sps_(std::move(sps)) {
  if (sps_.size() < 2) throw invalid_argument_error("sps_table: the SPS table needs entries for B >= 1");
  for (size_t b = 1; b < sps_.size(); ++b)
    if (!(sps_[b] > 0.0) || !std::isfinite(sps_[b]))
      throw invalid_argument_error("sps_table: SPS(" + std::to_string(b) + ") = " + std::to_string(sps_[b]) +
                                   " must be finite and > 0");
}

}  // namespace dspark

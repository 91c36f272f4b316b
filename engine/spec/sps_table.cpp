#include "engine/spec/sps_table.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "common/error.h"

namespace dspark {

namespace {

void check_curve(const std::vector<double>& sps) {
  if (sps.size() < 2) throw invalid_argument_error("sps_table: the SPS table needs entries for B >= 1");
  for (size_t b = 1; b < sps.size(); ++b)
    if (!(sps[b] > 0.0) || !std::isfinite(sps[b]))
      throw invalid_argument_error("sps_table: SPS(" + std::to_string(b) + ") = " + std::to_string(sps[b]) +
                                   " must be finite and > 0");
}

}  // namespace

sps_table::sps_table(std::vector<double> sps) {
  check_curve(sps);
  rows_.push_back({1, std::move(sps)});
}

sps_table::sps_table(std::vector<row> rows) : rows_(std::move(rows)) {
  if (rows_.empty()) throw invalid_argument_error("sps_table: no rows");
  for (size_t i = 0; i < rows_.size(); ++i) {
    if (rows_[i].sequences < 1 || (i > 0 && rows_[i].sequences <= rows_[i - 1].sequences))
      throw invalid_argument_error("sps_table: row sequence counts must be >= 1 and increasing");
    check_curve(rows_[i].sps);
  }
}

double sps_table::row_at(const row& r, int64_t b) {
  const int64_t last = static_cast<int64_t>(r.sps.size()) - 1;
  if (b > last) return r.sps[static_cast<size_t>(last)] * static_cast<double>(last) / static_cast<double>(b);
  return r.sps[static_cast<size_t>(b < 1 ? 1 : b)];
}

sps_table::curve sps_table::for_requests(int64_t sequences) const {
  curve c;
  c.r_ = std::max<int64_t>(sequences, 1);
  // lo: the last row with S <= r (the first row when none is).
  size_t lo = 0;
  while (lo + 1 < rows_.size() && rows_[lo + 1].sequences <= c.r_) ++lo;
  c.lo_ = &rows_[lo];
  if (c.lo_->sequences < c.r_ && lo + 1 < rows_.size()) c.hi_ = &rows_[lo + 1];
  return c;
}

double sps_table::curve::at(int64_t b) const {
  if (b < 1) b = 1;
  if (hi_ == nullptr) return row_at(*lo_, b);
  // Every request carries at least one token, so b < r reads b requests: the diagonal point b,
  // which row hi (S_hi > r > b) holds.
  if (b < r_) return row_at(*hi_, b);
  // Between rows lo and hi. Row hi's step of b tokens runs over min(b, S_hi) sequences, so the
  // weight is r's place between S_lo and that count (a step of b <= S_hi tokens over r <= b
  // sequences lies between S_lo sequences and b of them).
  const double span = static_cast<double>(std::min<int64_t>(b, hi_->sequences) - lo_->sequences);
  const double w = span > 0.0 ? static_cast<double>(r_ - lo_->sequences) / span : 1.0;
  return 1.0 / ((1.0 - w) / row_at(*lo_, b) + w / row_at(*hi_, b));
}

}  // namespace dspark

// Per-position calibration of cumulative confidences (engine/spec/metrics.h), hand-computed.
#include <gtest/gtest.h>

#include <vector>

#include "common/error.h"
#include "engine/spec/metrics.h"

namespace dspark {
namespace {

TEST(SpecCalibration, HandComputedEce) {
  spec_metrics m(3);
  // Round 1: c = (0.9, 0.5, 0.5) -> a = (0.9, 0.45, 0.225); accepted 1 of 3 verified.
  // Round 2: c = (0.9, 1.0)      -> a = (0.9, 0.9);          accepted 2 of 2.
  // Round 3: c = (0.3)           -> a = (0.3);               accepted 0 of 1.
  const std::vector<float> c1 = {0.9f, 0.5f, 0.5f}, c2 = {0.9f, 1.0f}, c3 = {0.3f};
  m.record_confidences(c1, 3, 1);
  m.record_confidences(c2, 2, 2);
  m.record_confidences(c3, 1, 0);
  // Position 1: bin 18 holds a = 0.9 twice, both accepted (|0.9 - 1| = 0.1, weight 2/3);
  // bin 6 holds 0.3, rejected (|0.3 - 0| = 0.3, weight 1/3): ECE = 0.0667 + 0.1 = 0.1667.
  EXPECT_EQ(m.calibrated_at(0), 3);
  EXPECT_NEAR(m.expected_calibration_error(0), 2.0 / 3 * 0.1 + 1.0 / 3 * 0.3, 1e-6);
  EXPECT_NEAR(m.mean_cumulative_confidence(0), (0.9 + 0.9 + 0.3) / 3, 1e-6);
  // Position 2: a = 0.45 (rejected) in bin 9, a = 0.9 (accepted) in bin 18: (0.45 + 0.1) / 2.
  EXPECT_NEAR(m.expected_calibration_error(1), 0.5 * 0.45 + 0.5 * 0.1, 1e-6);
  // Position 3: a = 0.225, rejected.
  EXPECT_NEAR(m.expected_calibration_error(2), 0.225, 1e-6);
  // Same bin, opposite errors cancel inside the bin (ECE is per bin, not per sample).
  spec_metrics n(1);
  const std::vector<float> h = {0.5f};
  n.record_confidences(h, 1, 1);
  n.record_confidences(h, 1, 0);
  EXPECT_NEAR(n.expected_calibration_error(0), 0.0, 1e-9);
  // merge adds bins; the JSON carries the arrays once anything was recorded.
  m.merge(n);
  EXPECT_EQ(m.calibrated_at(0), 5);
  EXPECT_TRUE(m.to_json().contains("confidence_ece"));
  EXPECT_FALSE(spec_metrics(2).to_json().contains("confidence_ece"));
  EXPECT_THROW(m.record_confidences(c1, 3, 4), invalid_argument_error);
  EXPECT_THROW(m.record_confidences(c3, 2, 0), invalid_argument_error);
}

}  // namespace
}  // namespace dspark

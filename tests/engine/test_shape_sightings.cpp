// The fixed-memory sighting table behind the CUDA graph cache (engine/shape_sightings.h).
#include "engine/shape_sightings.h"

#include <gtest/gtest.h>

#include <set>

namespace dspark {
namespace {

TEST(ShapeSightings, EverySightingAfterTheFirstIsReportedSeen) {
  shape_sightings s(64);
  const uint64_t a = shape_fingerprint({8, 1, 4, 8});
  EXPECT_FALSE(s.seen_before(a));
  EXPECT_TRUE(s.seen_before(a));
  EXPECT_TRUE(s.seen_before(a)) << "a shape the full graph cache turned away stays seen";
}

TEST(ShapeSightings, ShapesInTheirOwnSlotsDoNotDisturbEachOther) {
  shape_sightings s(4096);
  std::set<size_t> used;
  std::vector<uint64_t> fps;
  for (int n = 1; n <= 24; ++n) {
    const uint64_t f = shape_fingerprint({n, 1, n, 1});
    if (used.insert(f % 4096).second) fps.push_back(f);
  }
  ASSERT_GT(fps.size(), 20u);  // the mix spreads nearby shapes over the slots
  for (uint64_t f : fps) EXPECT_FALSE(s.seen_before(f));
  for (uint64_t f : fps) EXPECT_TRUE(s.seen_before(f));
}

TEST(ShapeSightings, ShapesSharingASlotOverwriteEachOther) {
  shape_sightings s(1);  // every shape in one slot
  const uint64_t a = shape_fingerprint({1, 2}), b = shape_fingerprint({2, 1});
  ASSERT_NE(a, b) << "the field order is part of the fingerprint";
  EXPECT_FALSE(s.seen_before(a));
  EXPECT_FALSE(s.seen_before(b));
  EXPECT_FALSE(s.seen_before(a)) << "b took a's slot, so a looks new";
  EXPECT_TRUE(s.seen_before(a));
}

TEST(ShapeSightings, FingerprintsAreNeverTheEmptyMarkAndPairsMatchTheirFields) {
  for (int64_t i = -1000; i < 1000; ++i) EXPECT_NE(shape_fingerprint({i}), 0u);
  EXPECT_EQ(shape_fingerprint(std::pair<int32_t, int32_t>{3, 7}), shape_fingerprint({3, 7}));
  shape_sightings zero_slots(0);  // clamped to one slot, not a division by zero
  EXPECT_FALSE(zero_slots.seen_before(5));
  EXPECT_TRUE(zero_slots.seen_before(5));
}

}  // namespace
}  // namespace dspark

// Which step shapes were seen before, in fixed memory. The CUDA graph cache captures a shape on
// its second sighting (engine/cuda/graph_cache.h), and under load a new ragged verify shape can
// arrive every step, so remembering sightings must not allocate.
//
// Direct-mapped on a 64-bit fingerprint of the shape: a shape counts as seen when its slot holds
// its fingerprint. Two shapes that share a slot overwrite each other (each then looks new again),
// and two shapes with one fingerprint look like one. Either only moves a capture by a sighting;
// neither changes what a graph computes, since the graphs themselves are keyed by the whole shape.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>
#include <vector>

namespace dspark {

// A shape's fingerprint from its integer fields, in order (FNV-1a over 32-bit words, then a
// final mix so that nearby shapes land in unrelated slots). Never 0: 0 marks an empty slot.
inline uint64_t shape_fingerprint(std::initializer_list<int64_t> fields) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int64_t f : fields) h = (h ^ static_cast<uint64_t>(f)) * 0x100000001b3ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h == 0 ? 1 : h;
}

inline uint64_t shape_fingerprint(const std::pair<int32_t, int32_t>& p) { return shape_fingerprint({p.first, p.second}); }

class shape_sightings {
 public:
  explicit shape_sightings(size_t slots) : slots_(slots == 0 ? 1 : slots, 0) {}

  // Records a sighting; true when this fingerprint was seen before (and still holds its slot).
  bool seen_before(uint64_t fingerprint) {
    uint64_t& slot = slots_[fingerprint % slots_.size()];
    if (slot == fingerprint) return true;
    slot = fingerprint;
    return false;
  }

 private:
  std::vector<uint64_t> slots_;  // 0 = empty
};

}  // namespace dspark

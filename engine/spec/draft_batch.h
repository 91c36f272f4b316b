// The drafts of one speculative step: per request slot, a chain of up to gamma_max proposed
// tokens, the exact distribution each was drawn from, and a per-token confidence.
//
// Why the distribution travels with the token: lossless rejection sampling accepts draft x with
// probability min(1, p_t(x) / p_d(x)) and, on rejection, samples from max(p_t - p_d, 0); both
// need p_d to be exactly the distribution x was drawn from (after the drafter's own temperature
// and filtering). A deterministic drafter (n-gram, greedy layer-skip) draws from a point mass,
// stored as a one-hot (no vector at all); a sampled drafter stores a dense [n_vocab] row or a
// sparse (ids, probs) list when its support is small.
//
// Storage is allocated once for max_slots x gamma_max, so a step allocates nothing:
//
//   tokens      [max_slots][gamma_max] i32
//   confidence  [max_slots][gamma_max] f32 in [0, 1]  (1 when the drafter has no estimate)
//   dense       [max_slots][gamma_max][n_vocab] f32   (kind == dense only)
//   sparse_ids  [max_slots][gamma_max][max_sparse] i32, ascending  (kind == sparse only)
//   sparse_p    [max_slots][gamma_max][max_sparse] f32             (kind == sparse only)
//   length      [max_slots] i32   drafts currently held per slot
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace dspark {

// How a drafter represents its per-token distributions. Values are only ever appended.
enum class draft_dist_kind : uint8_t {
  one_hot = 0,  // a point mass on the drafted token
  sparse = 1,   // (ids ascending, probs) pairs; every other token has probability 0
  dense = 2,    // a full [n_vocab] probability row
};

// A read-only view of the distribution one draft token was drawn from.
struct draft_dist {
  draft_dist_kind kind = draft_dist_kind::one_hot;
  int32_t token = -1;             // the drafted token
  std::span<const int32_t> ids;   // sparse: [n] ascending token ids
  std::span<const float> probs;   // sparse: [n] parallel to ids; dense: [n_vocab]

  // p_d(t); O(1) for one-hot and dense, O(log n) for sparse.
  float prob(int32_t t) const;
};

struct draft_batch_params {
  int32_t max_slots = 1;     // request slots, [0, max_slots)
  int32_t gamma_max = 1;     // longest chain per slot
  int64_t n_vocab = 0;       // needed for dense rows and token-range checks
  draft_dist_kind kind = draft_dist_kind::one_hot;
  int32_t max_sparse = 0;    // entries per sparse distribution (kind == sparse)
};

class draft_batch {
 public:
  // Allocates every buffer. Throws invalid_argument_error for sizes out of range.
  explicit draft_batch(const draft_batch_params& p);

  const draft_batch_params& params() const { return p_; }
  // Sets every slot's chain to length 0.
  void clear();
  // Sets one slot's chain to length 0.
  void clear(int32_t slot);

  int32_t length(int32_t slot) const { return length_[checked(slot)]; }
  std::span<const int32_t> tokens(int32_t slot) const;       // [length]
  std::span<const float> confidences(int32_t slot) const;    // [length]
  // The same, writable: the decoder replaces them with online estimates for drafters that
  // report none (engine/spec/online_confidence.h).
  std::span<float> mutable_confidences(int32_t slot);
  // The distribution draft k of `slot` was drawn from; k < length.
  draft_dist dist(int32_t slot, int32_t k) const;

  // Appends a draft drawn from a point mass (deterministic drafters). Any kind accepts it:
  // dense rows are filled with the one-hot, sparse lists get one entry.
  void push_one_hot(int32_t slot, int32_t token, float confidence = 1.0f);
  // The dense row the next draft of `slot` will use: fill it, then push_dense. kind == dense.
  std::span<float> next_dense_row(int32_t slot);
  // Appends a draft whose distribution was written into next_dense_row(slot).
  void push_dense(int32_t slot, int32_t token, float confidence = 1.0f);
  // Appends a draft with a sparse distribution (copied and sorted by id). kind == sparse,
  // ids.size() == probs.size() <= max_sparse.
  void push_sparse(int32_t slot, int32_t token, std::span<const int32_t> ids,
                   std::span<const float> probs, float confidence = 1.0f);
  // Keeps only the first n drafts of `slot` (the policy's truncation); n <= length.
  void truncate(int32_t slot, int32_t n);

 private:
  int32_t checked(int32_t slot) const;
  int32_t begin_push(int32_t slot, int32_t token, float confidence);
  size_t pos_index(int32_t slot, int32_t k) const {
    return static_cast<size_t>(slot) * static_cast<size_t>(p_.gamma_max) + static_cast<size_t>(k);
  }

  draft_batch_params p_;
  std::vector<int32_t> length_;      // [max_slots]
  std::vector<int32_t> tokens_;      // [max_slots][gamma_max]
  std::vector<float> confidence_;    // [max_slots][gamma_max]
  std::vector<float> dense_;         // [max_slots][gamma_max][n_vocab] (dense only)
  std::vector<int32_t> sparse_ids_;  // [max_slots][gamma_max][max_sparse] (sparse only)
  std::vector<float> sparse_p_;      // [max_slots][gamma_max][max_sparse] (sparse only)
  std::vector<int32_t> sparse_n_;    // [max_slots][gamma_max] (sparse only)
};

}  // namespace dspark

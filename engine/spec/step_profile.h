// Start-up profiling of the verify step-time curve SPS(B) (issue 7, method doc 3.2): how many
// target forward steps per second the backend runs when a step carries B new tokens in total,
// each with logits (the verify shape), at a few context lengths.
//
// Measurement: S sequences (S = min(B, max_sequences)) are prefilled to the context length;
// for each B the B tokens are spread as evenly as possible over them (ragged, as real verify
// steps are), the forward is timed on the host clock (every backend returns host logits, so
// the forward is complete when it returns), the median of `repeats` runs after `warmup` runs
// is kept, and the sequences are truncated back (O(1)) after every run.
//
// B values: every B up to 16, then every 8th up to max_tokens (SPS is jagged at tile
// boundaries, so the grid is dense where small batches live); the table the schedulers use is
// the linear interpolation to every integer B.
//
// The profile is cached on disk as JSON, keyed by a string the caller builds from the device,
// the model and the backend limits; a key mismatch re-profiles.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/spec/sps_table.h"

namespace dspark {

struct step_profile_options {
  int32_t max_tokens = 64;                    // largest B profiled
  std::vector<int32_t> context_lengths = {256};
  int32_t max_sequences = 8;                  // S cap (also capped by the backend's n_seq_max)
  int32_t repeats = 5;
  int32_t warmup = 2;
};

struct step_profile {
  std::string key;
  std::vector<int32_t> context_lengths;        // [C]
  std::vector<int32_t> batch_tokens;           // [N] the B values measured
  std::vector<std::vector<double>> step_s;     // [C][N] median seconds per step

  // Dense SPS table for the context length nearest to `context` (linear in B between
  // measured points, up to the last; sps_table::at extrapolates beyond it).
  sps_table table(int32_t context) const;
  std::string to_json() const;
  // Throws invalid_argument_error for malformed JSON or inconsistent sizes.
  static step_profile from_json(const std::string& text);
};

// Measures the profile on `be` (which must have S free sequences and room for
// context + max_tokens tokens in each). Throws invalid_argument_error for bad options or a
// backend that cannot hold the shape.
step_profile measure_step_profile(backend& be, const step_profile_options& opt, const std::string& key);

// Loads `path` when it exists and its key equals `key` and its grid matches `opt`; otherwise
// measures and writes `path` (best effort: an unwritable path only loses the cache).
step_profile load_or_measure_step_profile(backend& be, const step_profile_options& opt, const std::string& key,
                                          const std::string& path);

}  // namespace dspark

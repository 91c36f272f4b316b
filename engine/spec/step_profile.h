// Start-up profiling of the verify step-time curve SPS(R, B) (issue 7, method doc 3.2): how
// many target forward steps per second the backend runs when a step carries B new tokens in
// total over R sequences, each token with logits (the verify shape), at a few context lengths.
//
// Rows: the sequence counts S = 1, 2, 4, ... below max_sequences, and max_sequences itself.
// Row S measures
//   - B in (S', S], S' the previous row's count: one token a sequence (plain decoding of B
//     requests; the diagonal R = B, shared by every later row);
//   - B in (S, S * tokens_per_sequence] (the last row: up to max_tokens): the B tokens spread
//     as evenly as possible over S sequences (ragged, as verify steps are), every
//     max(1, min(16, S / 4)) tokens.
// A row's table is the diagonal below it plus its own points, linearly interpolated to every B
// (sps_table interpolates between rows in R). The diagonal is dense up to 16 and every 8th B
// above (SPS is jagged at tile boundaries, so the grid is dense where small batches live).
//
// Measurement: max_sequences sequences are prefilled to the context length; each point's
// forward is timed on the host clock (every backend returns host results, so the forward is
// complete when it returns), the median of `repeats` runs after `warmup` runs is kept, and the
// sequences are truncated back (O(1)) after every run.
//
// The profile is cached on disk as JSON, keyed by a string the caller builds from the device,
// the model and the backend limits; a key or grid mismatch re-profiles.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/spec/sps_table.h"

namespace dspark {

struct step_profile_options {
  int32_t max_tokens = 64;                    // largest B profiled
  std::vector<int32_t> context_lengths = {256};
  int32_t max_sequences = 8;                  // largest S (also capped by the backend's n_seq_max)
  int32_t tokens_per_sequence = 8;            // a row of S spans B up to S * this (anchor + gamma)
  int32_t repeats = 5;
  int32_t warmup = 2;
  // Seconds on the clock that times each step; empty: std::chrono::steady_clock. Tests give a
  // backend's own simulated clock, so what they assert does not depend on the machine's load.
  std::function<double()> now;
};

struct step_profile {
  struct row {
    int32_t sequences = 1;                        // S
    std::vector<int32_t> batch_tokens;            // [N] this row's own B values, increasing
    std::vector<std::vector<double>> step_s;      // [C][N] median seconds per step
  };
  std::string key;
  std::vector<int32_t> context_lengths;           // [C]
  std::vector<row> rows;                          // increasing S

  // SPS table for the context length nearest to `context`: a row per S (linear in B between
  // the diagonal's and the row's measured points, up to the row's last; sps_table::at
  // extrapolates beyond it).
  sps_table table(int32_t context) const;
  std::string to_json() const;
  // Throws invalid_argument_error for malformed JSON or inconsistent sizes.
  static step_profile from_json(const std::string& text);
};

// The rows (sequence counts and B values, no timings) measure_step_profile runs for `opt` on a
// backend with n_seq_max slots and max_tokens_per_step tokens a step.
std::vector<step_profile::row> step_profile_grid(const step_profile_options& opt, int32_t n_seq_max);

// The most tokens a sequence grows by past the context in any of these rows (ceil(B / S) at
// each row's largest B): the room each profiled context needs below n_ctx.
int32_t step_profile_growth(const std::vector<step_profile::row>& rows);

// Measures the profile on `be` (which must have max_sequences free sequences and room for
// context + each row's tokens per sequence in each). Throws invalid_argument_error for bad
// options or a backend that cannot hold the shape.
step_profile measure_step_profile(backend& be, const step_profile_options& opt, const std::string& key);

// Loads `path` when it exists and its key equals `key` and its grid matches `opt`; otherwise
// measures and writes `path` (best effort: an unwritable path only loses the cache).
step_profile load_or_measure_step_profile(backend& be, const step_profile_options& opt, const std::string& key,
                                          const std::string& path);

}  // namespace dspark

// SPS(R, B): target verify steps per second for a step of B total new tokens (every request's
// anchor plus its verified drafts) carried by R sequences, the hardware curve the confidence
// schedulers trade acceptance against (method doc 3.2). Measured at start-up by
// engine/spec/step_profile.h.
//
// Why R and not B alone: a step reads every sequence's keys and values once, so its cost grows
// with the sequences as well as with the tokens. 256 tokens carried as 64 requests of 4 (a
// verify step at 64 concurrent requests) read a quarter of the KV that 256 requests of 1 read;
// on the Qwen3-8B shape at context 256 that difference is about 7 GB a step, twice the
// weights' read time of the smallest steps. A curve measured with one token a sequence prices
// every draft at low load as if it came with a new request.
//
// The table holds rows measured at a few sequence counts S (powers of two up to the engine's
// slots). Row S gives the step time of B tokens over min(B, S) sequences; between rows the step
// time is interpolated linearly in R.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace dspark {

class sps_table {
 public:
  struct row {
    int32_t sequences = 1;    // S: the row's steps spread B tokens over min(B, S) sequences
    std::vector<double> sps;  // sps[b] for b = 1..n (sps[0] is ignored)
  };

  // One curve whatever the sequence count: sps[b] for b = 1..n (sps[0] is ignored). Every entry
  // must be finite and > 0; throws invalid_argument_error otherwise.
  explicit sps_table(std::vector<double> sps);
  // Rows with strictly increasing sequence counts >= 1, each as above. Throws
  // invalid_argument_error for an empty, unordered or invalid table.
  explicit sps_table(std::vector<row> rows);

  // SPS of a step of b tokens over `sequences` requests (clamped to [1, b]: every request
  // carries at least one token). B below 1 reads B = 1. B beyond a row takes its last entry's
  // step time scaled by B / n: past the profiled range a step is compute-bound, and a flat curve
  // there would price extra rows (prompt chunks carried by a verify forward, drafts on top of
  // them) as free. More sequences than the last row read the last row.
  double at(int64_t sequences, int64_t b) const { return for_requests(sequences).at(b); }
  // The curve at a fixed request count, looked up once: the schedulers price a whole step's
  // candidates at the batch's count, so their inner loop reads one or two rows directly.
  class curve {
   public:
    double at(int64_t b) const;

   private:
    friend class sps_table;
    const row* lo_ = nullptr;
    const row* hi_ = nullptr;  // null: lo_ alone
    int64_t r_ = 1;
  };
  curve for_requests(int64_t sequences) const;
  // A step of b tokens, one a sequence (plain decoding of b requests).
  double at(int64_t b) const { return at(b, b); }
  // The largest B the last row measured.
  int64_t max_b() const { return static_cast<int64_t>(rows_.back().sps.size()) - 1; }
  const std::vector<row>& rows() const { return rows_; }

 private:
  static double row_at(const row& r, int64_t b);
  std::vector<row> rows_;
};

}  // namespace dspark

// Closed-loop load through one serving loop (spec_decoder with continuous batching), the core
// of the load benchmarks (bench/bench_load.cpp). At concurrency C, C clients each keep one
// request in flight: when a request finishes, its client submits the next prompt (prompts
// cycle) before the next step, so the decoder always holds C requests.
//
// One level:
//   warm-up   runs until `warmup_requests` requests have finished (default C: the first wave;
//             CUDA graphs, kernel plans and caches are warm, and the clients are mid-stream);
//   window    opens right after, without draining: from then on every committed token counts
//             (a token callback per request) and every request that STARTS inside the window
//             and finishes inside it is a sample; it closes once `measured_requests` samples
//             are in, or once `max_seconds` have passed and at least min(measured_requests, C)
//             samples are in, whichever comes first;
//   close     the requests still in flight are cancelled (their KV freed), so the decoder is
//             empty for the next level and no drain tail (with fewer than C requests in
//             flight) enters the figures.
// Figures:
//   aggregate tok/s  tokens committed inside the window / its length
//   per-user tok/s   mean over samples of (generated - 1) / decode time (after the first token)
//   TPOT             per sample decode time / (generated - 1); p50, p90, p99
//   TTFT             per sample, from submission to the first token (queueing included)
//   tau, verify len  from the samples' own metrics: 1 + accepted / rounds, verified / rounds
//   mean active      requests the decoder held per step inside the window
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/sampler.h"
#include "engine/spec/spec_decoder.h"

namespace dspark {

struct load_level_options {
  int32_t concurrency = 1;         // >= 1, <= the decoder's max_requests
  int32_t warmup_requests = -1;    // finished requests before the window opens; -1 = concurrency
  int32_t measured_requests = 16;  // samples that close the window (>= 1)
  double max_seconds = 0.0;        // > 0: also close after this long (see above); 0: no limit
  sampling_params params;          // every request's; max_tokens per prompt may be overridden
  // Per prompt i (cycled with the prompts), its max_tokens; empty: params.max_tokens.
  std::span<const int32_t> max_tokens;
  // Called when the window opens and when it closes (before the cancellations), so callers
  // can snapshot their own counters (drafter, policy) over exactly the window.
  std::function<void()> on_window_open, on_window_close;
};

struct load_sample {
  int32_t generated = 0;
  double ttft_s = 0.0;
  double decode_s = 0.0;
  int64_t rounds = 0;
  int64_t verified = 0;
  int64_t accepted = 0;
};

struct load_level_result {
  int32_t concurrency = 0;
  double window_s = 0.0;
  int64_t window_tokens = 0;  // committed inside the window, by every request
  int64_t steps = 0;          // decoder steps inside the window
  int64_t active_sum = 0;     // requests held, summed over those steps
  int64_t cancelled = 0;      // in flight at the close
  std::vector<load_sample> samples;

  double aggregate_tokens_per_s() const;
  double per_user_tokens_per_s() const;
  double tpot_s(double q) const;  // q-quantile (nearest rank) over samples with >= 2 tokens
  double ttft_s(double q) const;
  double tau() const;                 // 1 + accepted / rounds over the samples; 1 without rounds
  double mean_verify_length() const;  // verified drafts / rounds over the samples
  double mean_active() const;
  // The figures above as one JSON object (names as in docs/scheduler.md's load benchmark).
  nlohmann::json to_json() const;
};

// Runs one level on `dec` (empty on entry, empty on return). prompts non-empty; next_prompt is
// the cycling cursor, advanced by every submission (so consecutive levels continue the cycle).
// invalid_argument_error for bad options (concurrency outside [1, max_requests], no prompts,
// measured_requests < 1).
load_level_result run_load_level(spec_decoder& dec, std::span<const std::vector<int32_t>> prompts,
                                 size_t& next_prompt, const load_level_options& o);

// Nearest-rank q-quantile of v (0 for an empty v).
double nearest_rank_quantile(std::vector<double> v, double q);

}  // namespace dspark

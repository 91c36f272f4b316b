// Per-round drafting traces: for every request, every verify round's proposed confidences and
// how many of the verified drafts the target accepted. Written by recording_drafter.h (a drafter
// decorator, `dspark eval --record-rounds FILE`) from a real drafter on a real target, read by
// replay_drafter.h to replay that acceptance on models without trained drafters (the 8B shapes
// with synthetic weights in bench/bench_load.cpp).
//
// File format, JSON lines:
//   line 1, the header: {"trace": "dspark-rounds", "version": 1, "drafter": "dspark",
//                        "has_confidence": true, "gamma_max": 7, "note": "..."}
//   then one line per finished request, in the order requests ended:
//     {"request": 3, "prompt_tokens": 41,
//      "rounds": [{"c": [0.91, 0.62, ...], "l": 7, "a": 2}, ...]}
//   c: the confidences c_1..c_g the drafter proposed (g may be 0: it proposed nothing),
//   l: drafts the target verified (the policy's prefix, <= g),
//   a: drafts accepted, <= l.
// A request's last round is missing: it ends the request, and the decoder does not call
// on_commit for it (the decorator cannot see its outcome).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dspark {

struct trace_round {
  std::vector<float> confidence;  // c_1..c_g as proposed
  int32_t verified = 0;           // l
  int32_t accepted = 0;           // a
};

struct trace_request {
  int64_t index = 0;          // order of begin() in the recording run
  int32_t prompt_tokens = 0;
  std::vector<trace_round> rounds;
};

struct round_trace_header {
  std::string drafter;          // the recorded drafter's caps().name
  bool has_confidence = false;  // c_k are the drafter's estimates (else all 1)
  int32_t gamma_max = 0;        // longest chain a round may hold
  std::string note;             // free text: how the trace was made
};

struct round_trace {
  round_trace_header header;
  std::vector<trace_request> requests;
};

// The header line and one request line, each without the trailing newline.
std::string trace_header_line(const round_trace_header& h);
std::string trace_request_line(const trace_request& r);

// Reads a trace file. Throws format_error naming the file and line for a missing file, a bad
// header, malformed JSON, or a round with a < 0, a > l, l > g or g > gamma_max, or a confidence
// outside [0, 1].
round_trace read_round_trace(const std::string& path);

}  // namespace dspark

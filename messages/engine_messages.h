// Messages between the intake and the verifier (server-internal, binary, messages/wire.h).
// The same bytes travel over inproc (one process), ipc or tcp (separate processes).
//
//   intake -> verifier: submit_request, cancel_request, status_query
//   verifier -> intake: token_delta (streamed per step), request_done, request_rejected,
//                       status_report
//
// A request is named by the intake's 64-bit key (unique per intake process); the verifier never
// sees client ids. Every submit ends with exactly one request_done or request_rejected.
// Type tags are only ever appended.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/sampler.h"

namespace dspark::msg {

// Limits enforced at decode (a frame over them is an error, never an allocation).
inline constexpr uint32_t k_max_prompt_tokens = 1u << 20;
inline constexpr uint32_t k_max_text_bytes = 16u << 20;
inline constexpr uint32_t k_max_stop_strings = 8;
inline constexpr uint32_t k_max_stop_bytes = 256;
inline constexpr uint32_t k_max_positions = 256;

enum class engine_type : uint16_t {
  submit = 1,
  cancel = 2,
  status_query = 3,
  token_delta = 10,
  done = 11,
  rejected = 12,
  status = 13,
};

// Why a request ended, as the client protocol names it. Values are only ever appended.
enum class end_reason : uint8_t { stop = 0, length = 1, context_full = 2, cancelled = 3 };
const char* end_reason_name(end_reason r);  // "stop", "length", "context_full", "cancelled"

// Error codes of the client protocol that the verifier can give. Values are only ever appended.
enum class reject_code : uint8_t { invalid_params = 0, internal = 1, overloaded = 2 };
const char* reject_code_name(reject_code c);  // "invalid_params", "internal", "overloaded"

struct submit_request {
  uint64_t key = 0;
  std::vector<int32_t> prompt;
  sampling_params params;
};

struct cancel_request {
  uint64_t key = 0;
};

struct status_query {
  uint64_t cookie = 0;  // echoed in the report
};

struct token_delta {
  uint64_t key = 0;
  std::vector<int32_t> token_ids;  // committed this step
  std::string text;                // the text they complete (may be empty)
};

struct request_stats {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  double ttft_s = 0;       // from the verifier receiving the submit to the first token
  double tpot_s = 0;       // mean time per output token after the first
  double tokens_per_s = 0; // completion tokens / (end - first token)
  double acceptance_length = 0;
  int64_t verify_steps = 0;
  int64_t draft_tokens_proposed = 0;
  int64_t draft_tokens_accepted = 0;
  int32_t cached_tokens = 0;  // prompt tokens served by the prefix cache (not prefilled)
};

struct request_done {
  uint64_t key = 0;
  std::vector<int32_t> token_ids;
  std::string text;
  end_reason reason = end_reason::length;
  request_stats stats;
};

struct request_rejected {
  uint64_t key = 0;
  reject_code code = reject_code::internal;
  std::string message;
};

// The verifier's state for health and metrics replies (and the KV tests).
struct status_report {
  uint64_t cookie = 0;
  int32_t active_requests = 0;   // holding a sequence and KV blocks
  int32_t queued_requests = 0;   // waiting for KV admission
  int32_t kv_blocks_total = 0;   // kv_manager's budget
  int32_t kv_blocks_used = 0;    // reserved by admitted requests
  int32_t backend_free_blocks = -1;  // the CPU backend's free + evictable cached blocks (-1: not known)
  int32_t backend_total_blocks = -1;
  int32_t kv_blocks_shared = 0;  // kv_manager's credit: block references saved by prefix sharing
  int64_t requests_finished = 0;
  int64_t tokens_generated = 0;
  int64_t verify_steps = 0;      // speculative rounds over all requests
  int64_t draft_tokens_proposed = 0;
  int64_t draft_tokens_accepted = 0;
  int64_t steps = 0;             // decoder steps (batches)
  int64_t step_tokens = 0;       // tokens forwarded in those steps' verify rounds
  std::vector<float> acceptance_by_position;  // conditional acceptance of draft k
  std::string drafter;           // the connected drafter's name, "" when none
  int64_t drafter_timeouts = 0;  // proposals that missed the deadline
  // The scheduler (actors/scheduler.h, engine/spec/timed_policy.h), over every verify step:
  int64_t plans = 0;                 // verify steps planned
  int64_t plan_request_rounds = 0;   // (request, step) pairs planned
  int64_t plan_drafts_verified = 0;  // drafts admitted by the policy
  int32_t verify_budget_max = 0;     // largest tokens verified in one step
  double plan_seconds_sum = 0;       // time inside policy.plan
  double plan_seconds_p99 = 0;       // over the last 4096 steps
  // The backend's prefix cache (engine/kv_block_pool.h: prefix_cache_stats), all 0 when off:
  int64_t prefix_cache_queries = 0;       // requests that looked up their prompt
  int64_t prefix_cache_hits = 0;          // ... and reused at least one block
  int64_t prefix_cache_query_tokens = 0;  // prompt tokens looked up
  int64_t prefix_cache_hit_tokens = 0;    // prompt tokens reused (not prefilled)
  int64_t prefix_cache_evictions = 0;     // cached blocks reclaimed for new data
  int32_t prefix_cache_blocks = 0;        // cached blocks (held or evictable)
  int32_t prefix_cache_evictable_blocks = 0;  // cached blocks no request holds
  // The speculation gate (engine/spec/spec_gate.h: spec_gate_stats), all 0 when off:
  int64_t gate_closes = 0;          // auto: open -> closed transitions
  int64_t gate_closed_steps = 0;    // decoder steps taken with speculation off
  int64_t gate_detached = 0;        // requests taken off the drafter
  int64_t gate_plain_admitted = 0;  // requests that joined while closed (never drafted)
  int64_t gate_reopens = 0;         // auto: closed -> open transitions
  int64_t gate_windows = 0;         // auto: decision windows measured
  int32_t gate_open = 1;            // 1 while requests that join get the drafter
  double gate_last_gain = 0;        // auto: G and o of the last window (tokens per request-step,
  double gate_last_cost = 0;        //       and the cost as a share of plain decoding's time)
};

using engine_message = std::variant<submit_request, cancel_request, status_query, token_delta,
                                    request_done, request_rejected, status_report>;

// Encodes into `out` (cleared first; its capacity is reused).
void encode(const submit_request& m, std::string& out);
void encode(const cancel_request& m, std::string& out);
void encode(const status_query& m, std::string& out);
void encode(const token_delta& m, std::string& out);
void encode(const request_done& m, std::string& out);
void encode(const request_rejected& m, std::string& out);
void encode(const status_report& m, std::string& out);

// Decodes one frame; wire_error (messages/wire.h) naming the problem for anything malformed.
engine_message decode_engine_message(std::string_view frame);

}  // namespace dspark::msg

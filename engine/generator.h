// Plain (non-speculative) generation for one request: chunked prefill, then one token per
// forward until a stop condition.
//
// Stop conditions, checked after each sampled token in this order:
//   1. a stop id (EOS / end of turn): the id is neither kept nor emitted;
//   2. a stop string in the text: the text up to it is emitted, the string itself is not;
//      a stop string may span several tokens, so text that could still be the start of a
//      stop string is held back until it is either completed or ruled out;
//   3. max_tokens generated;
//   4. the context is full.
// Text goes through the streaming UTF-8 decoder, so no callback ever holds half a character.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "engine/backend.h"
#include "engine/sampler.h"

namespace dspark {

class model;
class tokenizer;

enum class finish_reason : int { stop_id = 0, stop_string = 1, max_tokens = 2, context_full = 3 };
std::string_view finish_reason_name(finish_reason r);  // "stop", "stop_string", "length", ...

struct generation_stats {
  int32_t prompt_tokens = 0;
  int32_t cached_tokens = 0;     // prompt tokens whose K/V came from the prefix cache (not forwarded)
  int32_t generated_tokens = 0;  // sampled tokens, the final stop id included
  double prefill_s = 0;          // prompt forward time
  double decode_s = 0;           // from the first sampled token to the end
  double ttft_s = 0;             // from the call to the first sampled token
  double prefill_tok_s = 0;      // prompt_tokens / prefill_s
  double decode_tok_s = 0;       // decode forwards / decode_s
};

struct generation_result {
  std::vector<int32_t> token_ids;  // generated ids (a stop id excluded, stop-string ids kept)
  std::string text;                // emitted text (stop string and control tokens excluded)
  finish_reason finish = finish_reason::max_tokens;
  generation_stats stats;
};

// Called as text becomes final: `id` is the token just sampled (-1 for the final flush) and
// `text` the newly emitted text, possibly empty.
using token_callback = std::function<void(int32_t id, std::string_view text)>;

struct generate_options {
  int32_t prefill_chunk = 256;  // prompt tokens per forward (clamped to the backend's limit)
};

// Generates a continuation of `prompt` on a fresh sequence of `be` (freed on return).
// `tok` may be null (then no text and no stop strings). Throws invalid_argument_error for
// invalid params, an empty prompt, a prompt that leaves no room in the context (message gives
// both lengths), stop strings without a tokenizer, or no free sequence.
generation_result generate(backend& be, const tokenizer* tok, std::span<const int32_t> stop_ids,
                           std::span<const int32_t> prompt, const sampling_params& params,
                           const token_callback& on_token = {}, const generate_options& opt = {});

// As above with the model's tokenizer and stop ids.
generation_result generate(const model& m, backend& be, std::span<const int32_t> prompt,
                           const sampling_params& params, const token_callback& on_token = {},
                           const generate_options& opt = {});

}  // namespace dspark

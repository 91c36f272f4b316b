// One request's output side: commits tokens one at a time and applies the stop conditions of
// plain decoding (engine/generator.h), so speculative and plain generation end at the same
// token with the same text.
//
// Per committed token, in this order (as generate()):
//   1. a stop id (EOS / end of turn): counted as generated, neither kept nor emitted, stop;
//   2. kept; its text goes through the streaming UTF-8 decoder and the stop-string matcher
//      (text that could still start a stop string is held back); a completed stop string stops;
//   3. max_tokens kept tokens: stop;
//   4. the context is full (prompt + kept > n_ctx, i.e. the token could not be fed back): stop.
// A speculative round commits several tokens; the first stop drops the rest of the round.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "engine/generator.h"
#include "engine/sampler.h"
#include "engine/stop_strings.h"
#include "models/tokenizer/utf8_stream.h"

namespace dspark {

class tokenizer;

class request_output {
 public:
  // tok may be null (no text; stop strings then rejected by the caller's validation).
  request_output(const tokenizer* tok, std::span<const int32_t> stop_ids, const sampling_params& p,
                 int32_t n_ctx, int32_t prompt_len, token_callback on_token);

  // Commits one token. Returns false when generation has stopped (finish() says why); further
  // calls are ignored and return false.
  bool push(int32_t id);
  // Ends the text stream (flushes held-back text unless a stop string cut it); idempotent.
  void close();

  bool stopped() const { return stopped_; }
  // Kept tokens that may still be committed before max_tokens (>= 1 while not stopped).
  int32_t remaining() const;
  generation_result& result() { return res_; }
  const generation_result& result() const { return res_; }

 private:
  void emit(int32_t id, std::string_view text);

  std::span<const int32_t> stop_ids_;
  int32_t max_tokens_;
  int32_t n_ctx_;
  int32_t prompt_len_;
  token_callback on_token_;
  std::optional<token_text_stream> text_;
  stop_string_matcher stops_;
  generation_result res_;
  bool stopped_ = false;
  bool closed_ = false;
};

}  // namespace dspark

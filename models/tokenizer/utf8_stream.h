// Incremental detokenization for streaming generation output.
//
// A byte-level token can end in the middle of a UTF-8 character (an emoji is often 2-4 tokens),
// so printing each token's bytes as they come would emit broken characters. utf8_stream takes
// bytes, returns only complete text, and holds back a trailing incomplete sequence until later
// bytes complete it. Bytes that can never become valid are replaced by U+FFFD at once. The
// concatenated output of push()... + flush() equals tokenizer::decode() of the same tokens.
//
//   token_text_stream out(tok);
//   for (int32_t id : generated) std::cout << out.push(id) << std::flush;
//   std::cout << out.flush();
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dspark {

class tokenizer;

class utf8_stream {
 public:
  // Appends `bytes`; returns the text that is now complete (possibly empty).
  std::string push(std::string_view bytes);
  // Returns what is held back, an incomplete sequence becoming U+FFFD, and resets the stream.
  std::string flush();
  // Bytes held back waiting for the rest of a character (0..3).
  size_t pending() const { return pending_.size(); }

 private:
  std::string pending_;
};

// utf8_stream fed with token ids. The tokenizer must outlive it.
class token_text_stream {
 public:
  // skip_special: control tokens (<|im_end|>, ...) produce no text.
  explicit token_text_stream(const tokenizer& tok, bool skip_special = false)
      : tok_(&tok), skip_special_(skip_special) {}

  // Text completed by token `id`; throws invalid_argument_error for an id outside the vocabulary.
  std::string push(int32_t id);
  std::string flush() { return bytes_.flush(); }

 private:
  const tokenizer* tok_;
  bool skip_special_;
  utf8_stream bytes_;
};

}  // namespace dspark

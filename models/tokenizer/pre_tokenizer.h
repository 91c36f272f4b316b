// Pre-tokenization: cuts text into the pieces ("words") that BPE merges never cross.
//
// A pre-tokenizer is a list of steps applied in order, each step re-splitting every piece the
// previous one produced, as in Hugging Face's pre_tokenizers.Sequence:
//   split        a regex; matches and the gaps between them become pieces (the delimiter
//                behaviour says what happens to matches)
//   digits       isolates numeric characters (\p{N}), one by one or in runs
// The ByteLevel pre-tokenizer with use_regex=true is the `split` step with the GPT-2 regex; its
// byte spelling needs no step because BPE here works on raw bytes.
//
// Presets by GGUF `tokenizer.ggml.pre` name: gpt2, smollm, llama3 (llama-bpe, llama-v3), qwen2
// (deepseek-r1-qwen).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "models/tokenizer/regex.h"

namespace dspark {

// What a split step does with the text its pattern matches (HF SplitDelimiterBehavior).
enum class split_behavior : uint8_t { isolated, removed, merged_with_previous, merged_with_next, contiguous };

struct pre_tokenizer_step {
  std::shared_ptr<const regex> pattern;
  split_behavior behavior = split_behavior::isolated;
  bool invert = false;  // the pattern matches the pieces to keep, not the delimiters
};

// A piece of the input, as byte offsets [begin, end).
struct text_span {
  uint32_t begin = 0;
  uint32_t end = 0;
};

class pre_tokenizer {
 public:
  pre_tokenizer() = default;
  explicit pre_tokenizer(std::vector<pre_tokenizer_step> steps) : steps_(std::move(steps)) {}

  // The preset for a GGUF pre-tokenizer name; throws format_error naming the supported ones.
  static pre_tokenizer from_gguf_name(const std::string& name);
  // Whether BPE should emit a whole piece that is itself a token (Llama 3's ignore_merges).
  static bool gguf_name_ignores_merges(const std::string& name);

  // Step builders for the tokenizer.json loader.
  static pre_tokenizer_step gpt2_step();  // ByteLevel(use_regex=true)
  static pre_tokenizer_step digits_step(bool individual);

  // Splits valid UTF-8 `text` into non-empty pieces (offsets into text), appended to `out`.
  void split(std::string_view text, std::vector<text_span>& out) const;

  const std::vector<pre_tokenizer_step>& steps() const { return steps_; }

 private:
  std::vector<pre_tokenizer_step> steps_;
};

}  // namespace dspark

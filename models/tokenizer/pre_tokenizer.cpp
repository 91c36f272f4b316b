// Pre-tokenizer steps and the named presets (see pre_tokenizer.h).
#include "models/tokenizer/pre_tokenizer.h"

#include "common/error.h"

namespace dspark {
namespace {

// GPT-2's split: contractions, letters, numbers, other symbols, each optionally led by one
// space; whitespace runs leave their last space to the word that follows.
constexpr const char* k_gpt2_pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama 3: case-insensitive contractions, numbers in groups of up to three, newlines kept
// together with the punctuation before them.
constexpr const char* k_llama3_pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2 / 2.5 / 3: as Llama 3 but every digit on its own.
constexpr const char* k_qwen2_pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

pre_tokenizer_step make_step(const char* pattern) {
  pre_tokenizer_step s;
  s.pattern = std::make_shared<const regex>(pattern);
  return s;
}

struct marked_span {
  text_span span;
  bool delimiter;
};

// Applies one step to the piece `text[piece]`, appending the resulting pieces to `out`.
void split_piece(const pre_tokenizer_step& step, std::string_view text, text_span piece,
                 std::vector<marked_span>& scratch, std::vector<text_span>& out) {
  const std::string_view subject = text.substr(piece.begin, piece.end - piece.begin);
  scratch.clear();
  size_t pos = 0, gap_start = 0;
  size_t mb = 0, me = 0;
  while (pos <= subject.size() && step.pattern->find(subject, pos, mb, me)) {
    if (me == mb) {  // empty matches delimit nothing: step over one character
      pos = mb + 1;
      while (pos < subject.size() && (static_cast<uint8_t>(subject[pos]) & 0xC0) == 0x80) ++pos;
      continue;
    }
    if (mb > gap_start) scratch.push_back({{uint32_t(gap_start), uint32_t(mb)}, step.invert});
    scratch.push_back({{uint32_t(mb), uint32_t(me)}, !step.invert});
    pos = gap_start = me;
  }
  if (gap_start < subject.size()) {
    scratch.push_back({{uint32_t(gap_start), uint32_t(subject.size())}, step.invert});
  }

  const size_t first_out = out.size();
  bool previous_delim = false;
  switch (step.behavior) {
    case split_behavior::isolated:
      for (const auto& m : scratch) out.push_back(m.span);
      break;
    case split_behavior::removed:
      for (const auto& m : scratch)
        if (!m.delimiter) out.push_back(m.span);
      break;
    case split_behavior::merged_with_previous:
      // A delimiter extends the piece before it, unless that piece is a delimiter too.
      for (const auto& m : scratch) {
        if (m.delimiter && !previous_delim && out.size() > first_out) {
          out.back().end = m.span.end;
        } else {
          out.push_back(m.span);
        }
        previous_delim = m.delimiter;
      }
      break;
    case split_behavior::merged_with_next: {
      // Mirror image of merged_with_previous: walk backwards, then restore the order.
      std::vector<text_span> rev;
      for (size_t i = scratch.size(); i-- > 0;) {
        const auto& m = scratch[i];
        if (m.delimiter && !previous_delim && !rev.empty()) {
          rev.back().begin = m.span.begin;
        } else {
          rev.push_back(m.span);
        }
        previous_delim = m.delimiter;
      }
      for (size_t i = rev.size(); i-- > 0;) out.push_back(rev[i]);
      break;
    }
    case split_behavior::contiguous:
      // Adjacent pieces of the same kind become one. Only matches can be adjacent (gaps are
      // maximal), so this joins runs of matches, whether they are delimiters or, inverted, not.
      for (size_t i = 0; i < scratch.size(); ++i) {
        const auto& m = scratch[i];
        if (i > 0 && m.delimiter == previous_delim) {
          out.back().end = m.span.end;
        } else {
          out.push_back(m.span);
        }
        previous_delim = m.delimiter;
      }
      break;
  }
  for (size_t i = first_out; i < out.size(); ++i) {  // back to offsets into `text`
    out[i].begin += piece.begin;
    out[i].end += piece.begin;
  }
}

}  // namespace

pre_tokenizer_step pre_tokenizer::gpt2_step() { return make_step(k_gpt2_pattern); }

pre_tokenizer_step pre_tokenizer::digits_step(bool individual) {
  return make_step(individual ? R"(\p{N})" : R"(\p{N}+)");
}

pre_tokenizer pre_tokenizer::from_gguf_name(const std::string& name) {
  if (name == "gpt2") return pre_tokenizer({gpt2_step()});
  // SmolLM's tokenizer.json: Digits(individual_digits) then ByteLevel(use_regex).
  if (name == "smollm") return pre_tokenizer({digits_step(true), gpt2_step()});
  if (name == "llama3" || name == "llama-bpe" || name == "llama-v3") {
    return pre_tokenizer({make_step(k_llama3_pattern)});
  }
  if (name == "qwen2" || name == "deepseek-r1-qwen") return pre_tokenizer({make_step(k_qwen2_pattern)});
  throw format_error("tokenizer: unsupported pre-tokenizer '" + name +
                     "' (tokenizer.ggml.pre); supported: gpt2, smollm, llama3, llama-bpe, llama-v3, "
                     "qwen2, deepseek-r1-qwen");
}

bool pre_tokenizer::gguf_name_ignores_merges(const std::string& name) {
  return name == "llama3" || name == "llama-bpe" || name == "llama-v3";
}

void pre_tokenizer::split(std::string_view text, std::vector<text_span>& out) const {
  if (text.empty()) return;
  std::vector<text_span> current{{0, uint32_t(text.size())}}, next;
  std::vector<marked_span> scratch;
  for (const auto& step : steps_) {
    next.clear();
    for (const text_span& piece : current) split_piece(step, text, piece, scratch, next);
    current.swap(next);
  }
  out.insert(out.end(), current.begin(), current.end());
}

}  // namespace dspark

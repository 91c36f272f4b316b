// A compiled PCRE2 pattern in UTF + UCP mode (so \p{L}, \p{N}, \s follow Unicode, as the
// Oniguruma regexes of Hugging Face tokenizers do), JIT-compiled when the platform allows.
//
// Matching is thread-safe: the compiled code is shared read-only, and match data lives in a
// thread-local buffer. Subjects must be valid UTF-8 (the encoder checks this first), which
// lets every call skip PCRE2's own O(n) validity check.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace dspark {

class regex {
 public:
  // Compiles `pattern` (`literal`: match the text as is); throws format_error with PCRE2's
  // message and offset when it does not compile.
  explicit regex(const std::string& pattern, bool literal = false);
  ~regex();
  regex(const regex&) = delete;
  regex& operator=(const regex&) = delete;

  const std::string& pattern() const { return pattern_; }

  // Finds the first match in subject[start, end) of `subject` (lookarounds see the whole
  // subject). Returns false when there is none; fills [begin, finish) otherwise. Throws
  // invalid_argument_error if PCRE2 gives up (resource limits on pathological input).
  bool find(std::string_view subject, size_t start, size_t& begin, size_t& finish) const;

 private:
  struct impl;
  std::string pattern_;
  std::unique_ptr<impl> impl_;
};

}  // namespace dspark

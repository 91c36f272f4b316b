// PCRE2 glue for regex.h. Kept in one file so no other file includes pcre2.h.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "models/tokenizer/regex.h"

#include <pcre2.h>

#include "common/error.h"

namespace dspark {
namespace {

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  if (pcre2_get_error_message(code, buf, sizeof(buf)) < 0) return "error " + std::to_string(code);
  return reinterpret_cast<const char*>(buf);
}

// One match-data block per thread, large enough for group 0 of any pattern.
pcre2_match_data* thread_match_data() {
  struct holder {
    pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
    ~holder() { pcre2_match_data_free(md); }
  };
  thread_local holder h;
  return h.md;
}

}  // namespace

struct regex::impl {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~impl() { pcre2_code_free(code); }
};

regex::regex(const std::string& pattern, bool literal) : pattern_(pattern), impl_(new impl) {
  int err = 0;
  PCRE2_SIZE err_off = 0;
  // Literal patterns need no character classes, and PCRE2 rejects UCP together with LITERAL.
  const uint32_t opts = literal ? PCRE2_UTF | PCRE2_LITERAL : PCRE2_UTF | PCRE2_UCP;
  impl_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), opts,
                              &err, &err_off, nullptr);
  if (!impl_->code) {
    throw format_error("tokenizer: cannot compile pre-tokenizer regex '" + pattern + "' at offset " +
                       std::to_string(err_off) + ": " + pcre2_message(err));
  }
  // JIT is an optimisation only: fall back to the interpreter where it is unavailable.
  impl_->jit = pcre2_jit_compile(impl_->code, PCRE2_JIT_COMPLETE) == 0;
}

regex::~regex() = default;

bool regex::find(std::string_view subject, size_t start, size_t& begin, size_t& finish) const {
  pcre2_match_data* md = thread_match_data();
  const auto* s = reinterpret_cast<PCRE2_SPTR>(subject.data());
  int rc = impl_->jit ? pcre2_jit_match(impl_->code, s, subject.size(), start, PCRE2_NO_UTF_CHECK, md,
                                        nullptr)
                      : PCRE2_ERROR_JIT_BADOPTION;
  if (rc == PCRE2_ERROR_JIT_STACKLIMIT || rc == PCRE2_ERROR_JIT_BADOPTION) {
    // The interpreter keeps its backtracking state on the heap, so it copes with inputs (very
    // long whitespace runs) that overflow the JIT's fixed stack.
    rc = pcre2_match(impl_->code, s, subject.size(), start, PCRE2_NO_UTF_CHECK, md, nullptr);
  }
  if (rc == PCRE2_ERROR_NOMATCH) return false;
  if (rc < 0) {
    throw invalid_argument_error("tokenizer: regex '" + pattern_ + "' failed on a " +
                                 std::to_string(subject.size()) + "-byte input: " + pcre2_message(rc));
  }
  const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
  begin = ov[0];
  finish = ov[1];
  return true;
}

}  // namespace dspark

// UTF-8 scanning shared by the encoder (which must split off invalid bytes before the regexes
// see them), decode() and the streaming decoder (which replace them with U+FFFD).
//
// Invalid input is replaced the way Hugging Face's decoders (Rust's from_utf8_lossy) and the
// Unicode standard's "maximal subpart" practice do: each maximal prefix of a well-formed
// sequence that cannot be completed becomes one U+FFFD, so "\xF0\x9F\x98" is one replacement
// while "\xED\xA0\x80" (an encoded surrogate) is three.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace dspark {

enum class utf8_status : uint8_t {
  valid,      // a complete, well-formed sequence of `length` bytes
  truncated,  // the input ends inside a well-formed prefix of `length` bytes
  invalid,    // `length` bytes (>= 1) that cannot start or continue a sequence
};

struct utf8_step {
  utf8_status status;
  uint32_t length;
};

// Classifies the sequence at the start of [p, p + n); n must be >= 1.
utf8_step utf8_next(const uint8_t* p, size_t n);

// Appends `bytes` to `out` with every invalid or truncated subpart replaced by U+FFFD.
void utf8_append_lossy(std::string_view bytes, std::string& out);

// True when `bytes` is entirely well-formed UTF-8.
bool utf8_is_valid(std::string_view bytes);

inline constexpr std::string_view utf8_replacement = "\xEF\xBF\xBD";

}  // namespace dspark

// UTF-8 classification per the Unicode standard's table of well-formed byte sequences.
#include "models/tokenizer/utf8.h"

namespace dspark {

utf8_step utf8_next(const uint8_t* p, size_t n) {
  const uint8_t b0 = p[0];
  if (b0 < 0x80) return {utf8_status::valid, 1};
  // Continuation count and the allowed range of the second byte, by lead byte. The narrowed
  // ranges exclude overlong forms (E0, F0), surrogates (ED) and values above U+10FFFF (F4).
  uint32_t need = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {utf8_status::invalid, 1};  // a stray continuation byte, C0, C1 or F5..FF
  }
  for (uint32_t i = 1; i <= need; ++i) {
    if (i >= n) return {utf8_status::truncated, i};
    const uint8_t b = p[i];
    const uint8_t l = i == 1 ? lo : 0x80, h = i == 1 ? hi : 0xBF;
    if (b < l || b > h) return {utf8_status::invalid, i};
  }
  return {utf8_status::valid, need + 1};
}

void utf8_append_lossy(std::string_view bytes, std::string& out) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  const size_t n = bytes.size();
  size_t i = 0;
  while (i < n) {
    const size_t run_start = i;
    utf8_step s{utf8_status::valid, 0};
    while (i < n && (s = utf8_next(p + i, n - i)).status == utf8_status::valid) i += s.length;
    out.append(bytes.data() + run_start, i - run_start);
    if (i < n) {
      out.append(utf8_replacement);
      i += s.length;
    }
  }
}

bool utf8_is_valid(std::string_view bytes) {
  const auto* p = reinterpret_cast<const uint8_t*>(bytes.data());
  for (size_t i = 0; i < bytes.size();) {
    const utf8_step s = utf8_next(p + i, bytes.size() - i);
    if (s.status != utf8_status::valid) return false;
    i += s.length;
  }
  return true;
}

}  // namespace dspark

// Byte <-> character tables of the GPT-2 byte-level spelling (see byte_level.h).
#include "models/tokenizer/byte_level.h"

#include <array>

#include "models/tokenizer/utf8.h"

namespace dspark {
namespace {

bool printable_latin1(uint32_t b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct byte_tables {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 0x144> from_cp{};  // every code point used is below 0x100 + 68
  byte_tables() {
    from_cp.fill(-1);
    uint32_t next = 0x100;
    for (uint32_t b = 0; b < 256; ++b) {
      to_cp[b] = printable_latin1(b) ? b : next++;
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const byte_tables& tables() {
  static const byte_tables t;
  return t;
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else {  // the alphabet stays below U+0800: two bytes suffice
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace

uint32_t byte_level_code_point(uint8_t b) { return tables().to_cp[b]; }

std::string byte_level_spell(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) append_utf8(tables().to_cp[static_cast<uint8_t>(c)], out);
  return out;
}

bool byte_level_unspell(std::string_view spelled, std::string& out) {
  out.clear();
  const auto* p = reinterpret_cast<const uint8_t*>(spelled.data());
  const size_t n = spelled.size();
  for (size_t i = 0; i < n;) {
    const utf8_step s = utf8_next(p + i, n - i);
    if (s.status != utf8_status::valid || s.length > 2) return false;
    const uint32_t cp = s.length == 1 ? p[i] : ((p[i] & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
    if (cp >= tables().from_cp.size() || tables().from_cp[cp] < 0) return false;
    out.push_back(static_cast<char>(tables().from_cp[cp]));
    i += s.length;
  }
  return true;
}

}  // namespace dspark

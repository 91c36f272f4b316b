// The GPT-2 "byte-level" spelling: every byte value is written as one printable Unicode
// character, so vocabularies and merges can be stored as text. Bytes that are printable
// Latin-1 keep their own code point; the other 68 (controls, space, 0x7F..0xA0, 0xAD) take
// U+0100 onwards in byte order, which is why a space is spelled "Ġ" (U+0120) and "\n" "Ċ".
//
// The tokenizer works on raw bytes internally; this spelling is only used to read token
// strings and merges from files and to answer id_to_piece().
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace dspark {

// The code point that spells byte `b`.
uint32_t byte_level_code_point(uint8_t b);

// The UTF-8 spelling of raw `bytes` (e.g. " the" -> "Ġthe").
std::string byte_level_spell(std::string_view bytes);

// Raw bytes of a spelled token. Returns false (leaving `out` unspecified) when the text is not
// valid UTF-8 or uses a character outside the byte alphabet; callers then use the text as is,
// as Hugging Face's ByteLevel decoder does.
bool byte_level_unspell(std::string_view spelled, std::string& out);

}  // namespace dspark

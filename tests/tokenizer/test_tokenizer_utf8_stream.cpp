// Streaming decoder: complete characters only, held-back partial sequences, U+FFFD for bytes
// that can never be valid. Expected replacements follow the Unicode standard's "maximal
// subpart" practice (its Table 3-8 example below; Python's and Rust's lossy decoders agree).
#include <random>

#include <gtest/gtest.h>

#include "common/error.h"
#include "models/tokenizer/tokenizer.h"
#include "models/tokenizer/utf8.h"
#include "models/tokenizer/utf8_stream.h"
#include "tokenizer_fixtures.h"

namespace dspark {
namespace {

const std::string fffd = "\xEF\xBF\xBD";

TEST(TokenizerUtf8Stream, HoldsBackSplitCharacters) {
  utf8_stream s;
  EXPECT_EQ(s.push("a\xC3"), "a");
  EXPECT_EQ(s.pending(), 1u);
  EXPECT_EQ(s.push("\xA9"), "\xC3\xA9");  // é
  const std::string emoji = "\xF0\x9F\x98\x80";  // 😀, one byte at a time
  EXPECT_EQ(s.push(emoji.substr(0, 1)), "");
  EXPECT_EQ(s.push(emoji.substr(1, 1)), "");
  EXPECT_EQ(s.push(emoji.substr(2, 1)), "");
  EXPECT_EQ(s.push(emoji.substr(3, 1)), emoji);
  EXPECT_EQ(s.flush(), "");
}

TEST(TokenizerUtf8Stream, InvalidBytesBecomeReplacementAtOnce) {
  utf8_stream s;
  EXPECT_EQ(s.push("\xFF"), fffd);
  EXPECT_EQ(s.push("\x80x"), fffd + "x");
  EXPECT_EQ(s.push("\xE6"), "");
  EXPECT_EQ(s.push("A"), fffd + "A");  // the held-back lead byte cannot be completed any more
}

TEST(TokenizerUtf8Stream, FlushReplacesTruncatedTail) {
  utf8_stream s;
  EXPECT_EQ(s.push("ok\xF0\x9F\x98"), "ok");
  EXPECT_EQ(s.flush(), fffd);  // one maximal subpart, one replacement
  EXPECT_EQ(s.pending(), 0u);
  EXPECT_EQ(s.flush(), "");
}

TEST(TokenizerUtf8Stream, UnicodeStandardMaximalSubpartExample) {
  const std::string in = "\x61\xF1\x80\x80\xE1\x80\xC2\x62\x80\x63\x80\xBF\x64";
  const std::string want = "a" + fffd + fffd + fffd + "b" + fffd + "c" + fffd + fffd + "d";
  std::string lossy;
  utf8_append_lossy(in, lossy);
  EXPECT_EQ(lossy, want);
  // Byte by byte through the stream gives the same text.
  utf8_stream s;
  std::string streamed;
  for (char c : in) streamed += s.push(std::string(1, c));
  streamed += s.flush();
  EXPECT_EQ(streamed, want);
  // Surrogates, above U+10FFFF, overlong forms: every byte on its own.
  lossy.clear();
  utf8_append_lossy("\xED\xA0\x80\xF4\x90\x80\x80\xC0\xAF\xE0\x80\xAF", lossy);
  std::string twelve;
  for (int i = 0; i < 12; ++i) twelve += fffd;
  EXPECT_EQ(lossy, twelve);
}

TEST(TokenizerUtf8Stream, TokensSplittingCharactersStreamCleanly) {
  const tokenizer tok = tokenizer::from_hf_files(test::tokenizer_data("tiny_gpt2/tokenizer.json"));
  // The tiny vocabulary has no merges for these, so every character spans several tokens.
  const std::string text = "日本語 😀👨‍👩‍👧 Привет ü<|im_end|>";
  const auto ids = tok.encode(text);
  token_text_stream stream(tok);
  std::string out;
  size_t held_back = 0;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    EXPECT_TRUE(utf8_is_valid(piece)) << test::escaped(piece);
    if (piece.empty()) ++held_back;
    out += piece;
  }
  out += stream.flush();
  EXPECT_EQ(out, text);
  EXPECT_GT(held_back, 5u);

  token_text_stream no_special(tok, /*skip_special=*/true);
  std::string plain;
  for (int32_t id : ids) plain += no_special.push(id);
  plain += no_special.flush();
  EXPECT_EQ(plain, "日本語 😀👨‍👩‍👧 Привет ü");
}

TEST(TokenizerUtf8Stream, RandomTokensStreamLikeDecode) {
  const tokenizer tok = tokenizer::from_hf_files(test::tokenizer_data("tiny_gpt2/tokenizer.json"));
  std::mt19937 rng(42);
  std::uniform_int_distribution<int32_t> pick(0, tok.n_vocab() - 1);
  for (int round = 0; round < 200; ++round) {
    std::vector<int32_t> ids(1 + rng() % 12);
    for (auto& id : ids) id = pick(rng);
    token_text_stream s(tok);
    std::string out;
    for (int32_t id : ids) out += s.push(id);
    out += s.flush();
    EXPECT_EQ(out, tok.decode(ids));
    EXPECT_TRUE(utf8_is_valid(out));
  }
  token_text_stream s(tok);
  EXPECT_THROW(s.push(tok.n_vocab()), invalid_argument_error);
}

}  // namespace
}  // namespace dspark

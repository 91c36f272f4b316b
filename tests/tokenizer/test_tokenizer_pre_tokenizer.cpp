// Pre-tokenization against Hugging Face's pre_tokenize_str (data/pre_tokenizer_cases.json):
// every Split behavior with and without invert, and the named presets (gpt2, smollm, llama3,
// qwen2) on the fixture strings, compared as byte-level spelled pieces.
#include <gtest/gtest.h>

#include "common/error.h"
#include "models/tokenizer/byte_level.h"
#include "models/tokenizer/pre_tokenizer.h"
#include "tokenizer_fixtures.h"

namespace dspark {
namespace {

split_behavior behavior_named(const std::string& b) {
  if (b == "removed") return split_behavior::removed;
  if (b == "isolated") return split_behavior::isolated;
  if (b == "merged_with_previous") return split_behavior::merged_with_previous;
  if (b == "merged_with_next") return split_behavior::merged_with_next;
  if (b == "contiguous") return split_behavior::contiguous;
  ADD_FAILURE() << "unknown behavior " << b;
  return split_behavior::isolated;
}

std::vector<std::string> pieces_of(const pre_tokenizer& pre, const std::string& text, bool spell) {
  std::vector<text_span> spans;
  pre.split(text, spans);
  std::vector<std::string> out;
  for (const text_span& s : spans) {
    const std::string piece = text.substr(s.begin, s.end - s.begin);
    out.push_back(spell ? byte_level_spell(piece) : piece);
  }
  return out;
}

TEST(TokenizerPreTokenizer, SplitBehaviorsMatchHuggingFace) {
  const auto fx = test::load_fixture("pre_tokenizer_cases.json");
  ASSERT_GE(fx.at("split").size(), 100u);
  for (const auto& c : fx.at("split")) {
    pre_tokenizer_step step;
    step.pattern = std::make_shared<const regex>(c.at("pattern").get<std::string>(), !c.at("regex").get<bool>());
    step.behavior = behavior_named(c.at("behavior"));
    step.invert = c.at("invert");
    const pre_tokenizer pre({step});
    EXPECT_EQ(pieces_of(pre, c.at("text"), false), c.at("pieces").get<std::vector<std::string>>())
        << c.dump();
  }
}

TEST(TokenizerPreTokenizer, PresetsMatchHuggingFace) {
  const auto fx = test::load_fixture("pre_tokenizer_cases.json");
  for (const auto& [name, cases] : fx.at("presets").items()) {
    const pre_tokenizer pre = pre_tokenizer::from_gguf_name(name);
    ASSERT_GE(cases.size(), 50u);
    for (const auto& c : cases) {
      EXPECT_EQ(pieces_of(pre, c.at("text"), true), c.at("pieces").get<std::vector<std::string>>())
          << name << ": " << test::escaped(c.at("text"));
    }
  }
}

TEST(TokenizerPreTokenizer, PresetAliasesAndUnknownNames) {
  EXPECT_NO_THROW(pre_tokenizer::from_gguf_name("llama-bpe"));
  EXPECT_NO_THROW(pre_tokenizer::from_gguf_name("deepseek-r1-qwen"));
  EXPECT_TRUE(pre_tokenizer::gguf_name_ignores_merges("llama-bpe"));
  EXPECT_FALSE(pre_tokenizer::gguf_name_ignores_merges("qwen2"));
  EXPECT_THROW(pre_tokenizer::from_gguf_name("tekken"), format_error);
}

}  // namespace
}  // namespace dspark

// The tokenizer.json loader (and the GGUF loader on the same tiny vocabulary) against Hugging
// Face: small BPEs trained by scripts/make_tokenizer_fixtures.py with the `tokenizers` library,
// whose ids, decodes and chat renderings are in data/tiny_*/cases.json. They need no model.
#include <random>

#include <gtest/gtest.h>

#include "models/formats/gguf.h"
#include "models/tokenizer/chat_template.h"
#include "models/tokenizer/tokenizer.h"
#include "tokenizer_fixtures.h"

namespace dspark {
namespace {

using test::escaped;
using test::tokenizer_data;

tokenizer load_tiny(const std::string& name, bool with_config) {
  return tokenizer::from_hf_files(tokenizer_data(name + "/tokenizer.json"),
                                  with_config ? tokenizer_data(name + "/tokenizer_config.json") : "");
}

// Encodes every fixture string with HF's add_special_tokens=True and checks ids and decodes.
void expect_cases(const tokenizer& tok, const nlohmann::json& fx) {
  ASSERT_GE(fx.at("encode").size(), 200u);
  for (const auto& c : fx.at("encode")) {
    const std::string text = c.at("text");
    const auto ids = c.at("ids").get<std::vector<int32_t>>();
    EXPECT_EQ(tok.encode(text, true, true), ids) << "text: " << escaped(text);
    EXPECT_EQ(tok.decode(ids), c.at("decoded").get<std::string>()) << escaped(text);
    EXPECT_EQ(tok.decode(tok.encode(text)), text) << escaped(text);
  }
}

void expect_chat(const tokenizer& tok, const nlohmann::json& fx) {
  const chat_template tmpl(tok.chat_template());
  ASSERT_TRUE(tmpl.supported());
  ASSERT_FALSE(fx.at("chat").empty());
  for (const auto& c : fx.at("chat")) {
    const std::string text = tmpl.apply(test::fixture_messages(c.at("messages")), c.at("add_generation_prompt"));
    EXPECT_EQ(text, c.at("text").get<std::string>());
    EXPECT_EQ(tok.encode(text), c.at("ids").get<std::vector<int32_t>>()) << escaped(text);
  }
}

TEST(TokenizerHfJson, Gpt2StyleDigitsByteLevelStringMerges) {
  const tokenizer tok = load_tiny("tiny_gpt2", true);
  expect_cases(tok, test::load_fixture("tiny_gpt2/cases.json"));
  expect_chat(tok, test::load_fixture("tiny_gpt2/cases.json"));
  EXPECT_EQ(tok.eos_id(), tok.token_to_id("<|im_end|>"));
  EXPECT_EQ(tok.bos_id(), -1);
  EXPECT_FALSE(tok.add_bos());
  // <think> is an added token that is not special: matched even without parse_special.
  const int32_t think = tok.token_to_id("<think>");
  ASSERT_GE(think, 0);
  EXPECT_EQ(tok.encode("<think>", false), std::vector<int32_t>{think});
  EXPECT_FALSE(tok.is_control(think));
}

TEST(TokenizerHfJson, Qwen2StyleSplitRegexPairMerges) {
  const tokenizer tok = load_tiny("tiny_qwen2", true);
  expect_cases(tok, test::load_fixture("tiny_qwen2/cases.json"));
  expect_chat(tok, test::load_fixture("tiny_qwen2/cases.json"));
  EXPECT_EQ(chat_template(tok.chat_template()).default_system_prompt(), "");
}

TEST(TokenizerHfJson, Llama3StyleIgnoreMergesAndBosPostProcessor) {
  const tokenizer tok = load_tiny("tiny_llama3", false);
  EXPECT_TRUE(tok.add_bos());
  EXPECT_EQ(tok.bos_id(), tok.token_to_id("<|begin_of_text|>"));
  expect_cases(tok, test::load_fixture("tiny_llama3/cases.json"));
  EXPECT_TRUE(tok.is_stop(tok.token_to_id("<|eot_id|>")));
  EXPECT_EQ(tok.eot_id(), tok.token_to_id("<|eot_id|>"));
}

TEST(TokenizerHfJson, ArbitraryBytesRoundTripThroughTokenBytes) {
  // The tiny vocabularies hold all 256 byte tokens, so even invalid UTF-8 input survives:
  // invalid bytes bypass the regexes and are encoded byte by byte.
  const tokenizer tok = load_tiny("tiny_qwen2", false);
  std::mt19937 rng(99);
  for (int round = 0; round < 300; ++round) {
    std::string in(rng() % 64, '\0');
    for (char& c : in) c = char(rng() % 4 == 0 ? 0x80 + rng() % 0x80 : rng() % 0x80);
    std::string bytes;
    for (int32_t id : tok.encode(in)) bytes += tok.token_bytes(id);
    EXPECT_EQ(bytes, in) << escaped(in);
  }
}

TEST(TokenizerTinyGguf, GgufLoaderMatchesHuggingFace) {
  // Same vocabulary, merges and pre-tokenizer ("smollm") as tiny_gpt2, written as GGUF metadata.
  const tokenizer tok = tokenizer::from_gguf(gguf_file::open(tokenizer_data("gguf/tiny_smollm.gguf")));
  expect_cases(tok, test::load_fixture("tiny_gpt2/cases.json"));
  expect_chat(tok, test::load_fixture("tiny_gpt2/cases.json"));
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_FALSE(tok.add_bos());
}

}  // namespace
}  // namespace dspark

// The default model's tokenizer, loaded from its GGUF, against Hugging Face's ids, decodes and
// chat renderings in data/smollm2_cases.json (scripts/make_tokenizer_fixtures.py).
// Needs the model: skips when it is absent (DSPARK_MODEL or .models/).
#include <atomic>
#include <memory>
#include <thread>

#include <gtest/gtest.h>

#include "common/error.h"
#include "models/formats/gguf.h"
#include "models/tokenizer/chat_template.h"
#include "models/tokenizer/tokenizer.h"
#include "tokenizer_fixtures.h"

namespace dspark {
namespace {

using test::escaped;

const tokenizer& smollm2(const std::string& path) {
  static std::unique_ptr<tokenizer> tok;
  if (!tok) tok = std::make_unique<tokenizer>(tokenizer::from_gguf(gguf_file::open(path)));
  return *tok;
}

TEST(TokenizerSmolLM2, EncodesLikeHuggingFace) {
  DSPARK_REQUIRE_MODEL(model);
  const tokenizer& tok = smollm2(model);
  const auto fx = test::load_fixture("smollm2_cases.json");
  ASSERT_GE(fx.at("encode").size(), 200u);
  for (const auto& c : fx.at("encode")) {
    const std::string text = c.at("text");
    EXPECT_EQ(tok.encode(text), c.at("ids").get<std::vector<int32_t>>()) << "text: " << escaped(text);
  }
}

TEST(TokenizerSmolLM2, DecodeRoundTrips) {
  DSPARK_REQUIRE_MODEL(model);
  const tokenizer& tok = smollm2(model);
  const auto fx = test::load_fixture("smollm2_cases.json");
  for (const auto& c : fx.at("encode")) {
    const std::string text = c.at("text");
    EXPECT_EQ(tok.decode(c.at("ids").get<std::vector<int32_t>>()), text) << escaped(text);
    EXPECT_EQ(tok.decode(tok.encode(text)), text) << escaped(text);
  }
}

TEST(TokenizerSmolLM2, DecodesBrokenUtf8LikeHuggingFace) {
  DSPARK_REQUIRE_MODEL(model);
  const tokenizer& tok = smollm2(model);
  const auto fx = test::load_fixture("smollm2_cases.json");
  for (const auto& c : fx.at("decode")) {
    const auto ids = c.at("ids").get<std::vector<int32_t>>();
    EXPECT_EQ(tok.decode(ids), c.at("text").get<std::string>()) << c.at("ids").dump();
  }
}

TEST(TokenizerSmolLM2, MetadataAndSpecialIds) {
  DSPARK_REQUIRE_MODEL(model);
  const tokenizer& tok = smollm2(model);
  const auto fx = test::load_fixture("smollm2_cases.json");
  EXPECT_EQ(tok.n_vocab(), fx.at("n_vocab").get<int32_t>());
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.unk_id(), 0);
  EXPECT_EQ(tok.pad_id(), 2);
  EXPECT_FALSE(tok.add_bos());
  EXPECT_EQ(tok.token_to_id("<|im_end|>"), 2);
  EXPECT_EQ(tok.eot_id(), 2);
  EXPECT_TRUE(tok.is_stop(2));
  EXPECT_TRUE(tok.is_stop(0));  // <|endoftext|>
  EXPECT_FALSE(tok.is_stop(1));
  EXPECT_EQ(tok.id_to_piece(1), "<|im_start|>");
  EXPECT_EQ(tok.token_to_id("\xC4\xA0"), 216);  // "Ġ", the lone space in the fixtures
  EXPECT_EQ(tok.token_bytes(216), " ");
  EXPECT_EQ(tok.token_to_id("no such piece"), -1);
  EXPECT_EQ(tok.chat_template(), fx.at("chat_template").get<std::string>());
  EXPECT_THROW(tok.token_bytes(tok.n_vocab()), invalid_argument_error);
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-1}), invalid_argument_error);
}

TEST(TokenizerSmolLM2, SpecialTokensAreTextWithoutParseSpecial) {
  DSPARK_REQUIRE_MODEL(model);
  const tokenizer& tok = smollm2(model);
  // HF with encode_special_tokens=True as the reference.
  const auto cases = test::load_fixture("smollm2_cases.json").at("encode_no_special");
  ASSERT_GE(cases.size(), 10u);
  for (const auto& c : cases) {
    const std::string text = c.at("text");
    EXPECT_EQ(tok.encode(text, false), c.at("ids").get<std::vector<int32_t>>()) << escaped(text);
  }
  const std::string text = "<|im_start|>user\nHi<|im_end|>";
  const auto with = tok.encode(text, true);
  const auto without = tok.encode(text, false);
  EXPECT_EQ(with.front(), 1);
  EXPECT_EQ(with.back(), 2);
  for (int32_t id : without) EXPECT_FALSE(tok.is_control(id)) << id;
  EXPECT_EQ(tok.decode(without), text);
  EXPECT_EQ(tok.decode(with, /*skip_special=*/true), "user\nHi");
}

TEST(TokenizerSmolLM2, ChatTemplateMatchesHuggingFace) {
  DSPARK_REQUIRE_MODEL(model);
  const tokenizer& tok = smollm2(model);
  const chat_template tmpl(tok.chat_template());
  ASSERT_TRUE(tmpl.supported());
  EXPECT_EQ(tmpl.default_system_prompt(), "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  const auto fx = test::load_fixture("smollm2_cases.json");
  for (const auto& c : fx.at("chat")) {
    const std::string text = tmpl.apply(test::fixture_messages(c.at("messages")), c.at("add_generation_prompt"));
    EXPECT_EQ(text, c.at("text").get<std::string>());
    EXPECT_EQ(tok.encode(text), c.at("ids").get<std::vector<int32_t>>()) << escaped(text);
  }
}

TEST(TokenizerSmolLM2, LongInputsRoundTrip) {
  DSPARK_REQUIRE_MODEL(model);
  const tokenizer& tok = smollm2(model);
  // Long runs stress the regex (JIT stack, lookahead) and the BPE heap.
  const std::string inputs[] = {std::string(60000, ' ') + "x", std::string(30000, '7'),
                                std::string(20000, 'a') + std::string(20000, '\n'),
                                [] { std::string s; for (int i = 0; i < 5000; ++i) s += "\xF0\x9F\x98\x80"; return s; }()};
  for (const std::string& in : inputs) {
    const auto ids = tok.encode(in);
    EXPECT_FALSE(ids.empty());
    EXPECT_LT(ids.size(), in.size() + 1);
    EXPECT_EQ(tok.decode(ids), in);
  }
}

TEST(TokenizerSmolLM2, ConcurrentEncodingAgrees) {
  DSPARK_REQUIRE_MODEL(model);
  const tokenizer& tok = smollm2(model);
  const auto cases = test::load_fixture("smollm2_cases.json").at("encode");
  std::vector<std::string> texts;
  std::vector<std::vector<int32_t>> want;
  for (const auto& c : cases) {
    texts.push_back(c.at("text"));
    want.push_back(c.at("ids").get<std::vector<int32_t>>());
  }
  std::atomic<int> mismatches{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 5; ++round) {
        for (size_t i = (t * 37) % texts.size(), k = 0; k < texts.size(); ++k, i = (i + 1) % texts.size()) {
          if (tok.encode(texts[i]) != want[i]) ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

}  // namespace
}  // namespace dspark

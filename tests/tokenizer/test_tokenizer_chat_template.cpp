// ChatML formatting without a model: default system prompts read from template sources
// (SmolLM2's, from the fixture written with HF; a Qwen2.5-style one with Jinja escapes), and
// the errors for templates we do not support. Renderings are compared with HF's
// apply_chat_template output stored in the fixtures.
#include <gtest/gtest.h>

#include "common/error.h"
#include "models/tokenizer/chat_template.h"
#include "tokenizer_fixtures.h"

namespace dspark {
namespace {

TEST(TokenizerChatTemplate, SmolLM2RenderingsMatchHuggingFace) {
  const auto fx = test::load_fixture("smollm2_cases.json");
  const chat_template tmpl(fx.at("chat_template").get<std::string>());
  ASSERT_TRUE(tmpl.supported());
  EXPECT_EQ(tmpl.default_system_prompt(), "You are a helpful AI assistant named SmolLM, trained by Hugging Face");
  for (const auto& c : fx.at("chat")) {
    EXPECT_EQ(tmpl.apply(test::fixture_messages(c.at("messages")), c.at("add_generation_prompt")),
              c.at("text").get<std::string>());
  }
}

TEST(TokenizerChatTemplate, EscapedLiteralsInTemplateSource) {
  // As Qwen2.5 writes it: "\n" escapes inside single-quoted Jinja literals, the default system
  // turn after a tools branch that only opens a system turn.
  const chat_template tmpl(
      "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- else %}{%- if messages[0]['role'] == 'system' %}"
      "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}"
      "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You\\'re helpful.<|im_end|>\\n' }}"
      "{%- endif %}{%- endif %}");
  ASSERT_TRUE(tmpl.supported());
  EXPECT_EQ(tmpl.default_system_prompt(), "You are Qwen, created by Alibaba Cloud. You're helpful.");
  EXPECT_EQ(tmpl.apply({{"user", "Hi"}}, true),
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You're helpful.<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(tmpl.apply({{"system", "S"}, {"user", "Hi"}}, false),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
}

TEST(TokenizerChatTemplate, TemplateWithoutDefaultSystem) {
  const auto fx = test::load_fixture("tiny_qwen2/cases.json");
  const std::string src = nlohmann::json::parse(test::read_text_file(
      test::tokenizer_data("tiny_qwen2/tokenizer_config.json"))).at("chat_template");
  const chat_template tmpl(src);
  ASSERT_TRUE(tmpl.supported());
  EXPECT_EQ(tmpl.default_system_prompt(), "");
  for (const auto& c : fx.at("chat")) {
    EXPECT_EQ(tmpl.apply(test::fixture_messages(c.at("messages")), c.at("add_generation_prompt")),
              c.at("text").get<std::string>());
  }
}

TEST(TokenizerChatTemplate, UnsupportedTemplatesAreClearErrors) {
  const chat_template llama3(
      "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + "
      "m['content'] + '<|eot_id|>' }}{% endfor %}");
  EXPECT_FALSE(llama3.supported());
  try {
    llama3.apply({{"user", "Hi"}}, true);
    FAIL() << "expected invalid_argument_error";
  } catch (const invalid_argument_error& e) {
    EXPECT_NE(std::string(e.what()).find("unsupported"), std::string::npos) << e.what();
  }
  EXPECT_THROW(chat_template("").apply({{"user", "Hi"}}, true), invalid_argument_error);
  const chat_template chatml("{{'<|im_start|>' + m + '<|im_end|>'}}");
  EXPECT_THROW(chatml.apply({{"", "x"}}, true), invalid_argument_error);
  EXPECT_THROW(chatml.apply({{"us\ner", "x"}}, true), invalid_argument_error);
  EXPECT_THROW(chatml.apply({}, false), invalid_argument_error);
  EXPECT_EQ(chatml.apply({}, true), "<|im_start|>assistant\n");
}

}  // namespace
}  // namespace dspark

// Chat formatting for ChatML-style templates (SmolLM2, Qwen2/2.5/3, many others):
//
//   <|im_start|>system\n{default system prompt}<|im_end|>\n    only if the template has one and
//                                                              the conversation starts without
//   <|im_start|>{role}\n{content}<|im_end|>\n                  for each message
//   <|im_start|>assistant\n                                    with add_generation_prompt
//
// We do not run Jinja: the template source is recognised as ChatML (it writes both <|im_start|>
// and <|im_end|>), and its default system prompt, if any, is read from the string literal that
// writes "<|im_start|>system\n...<|im_end|>" in one piece (SmolLM2's and Qwen2.5's do; Qwen3's
// has none). Other templates are reported as unsupported rather than guessed at. Tool calls and
// Qwen3's thinking-block rewriting of past assistant turns are not reproduced.
#pragma once

#include <string>
#include <vector>

namespace dspark {

struct chat_message {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

class chat_template {
 public:
  // Never throws; an unsupported or empty source makes apply() throw instead.
  explicit chat_template(std::string source);

  bool supported() const { return supported_; }
  // The system prompt used when a conversation has none ("" when the template adds none).
  const std::string& default_system_prompt() const { return default_system_; }
  const std::string& source() const { return source_; }

  // The prompt text for `messages`; throws invalid_argument_error when the template is not
  // ChatML ("chat formatting is unsupported for this template"), when a role is empty or
  // contains a newline, or when `messages` is empty and no generation prompt is asked for.
  std::string apply(const std::vector<chat_message>& messages, bool add_generation_prompt) const;

 private:
  std::string source_;
  bool supported_ = false;
  std::string default_system_;
};

}  // namespace dspark

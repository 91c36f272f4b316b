// ChatML recognition, default system prompt extraction and rendering (see chat_template.h).
#include "models/tokenizer/chat_template.h"

#include "common/error.h"

namespace dspark {
namespace {

constexpr std::string_view k_start = "<|im_start|>";
constexpr std::string_view k_end = "<|im_end|>";

// Decodes the Jinja string literal whose opening quote is at source[open]; returns false if it
// is not terminated. Jinja (Python) escapes: \n \t \r \\ \' \" ; others are kept as written.
bool read_literal(const std::string& source, size_t open, std::string& out, size_t& close) {
  const char quote = source[open];
  out.clear();
  for (size_t i = open + 1; i < source.size(); ++i) {
    const char c = source[i];
    if (c == quote) {
      close = i;
      return true;
    }
    if (c == '\\' && i + 1 < source.size()) {
      const char e = source[++i];
      switch (e) {
        case 'n': out.push_back('\n'); break;
        case 't': out.push_back('\t'); break;
        case 'r': out.push_back('\r'); break;
        case '\\': case '\'': case '"': out.push_back(e); break;
        default: out.push_back('\\'); out.push_back(e); break;
      }
    } else {
      out.push_back(c);
    }
  }
  return false;
}

// The text of the first string literal that writes a whole default system turn, or "".
std::string find_default_system(const std::string& source) {
  const std::string head = std::string(k_start) + "system\n";
  std::string lit;
  size_t i = 0;
  while (i < source.size()) {
    if (source[i] != '\'' && source[i] != '"') {
      ++i;
      continue;
    }
    size_t close = 0;
    if (!read_literal(source, i, lit, close)) break;
    const size_t h = lit.find(head);
    if (h != std::string::npos) {
      const size_t e = lit.find(k_end, h + head.size());
      if (e != std::string::npos) return lit.substr(h + head.size(), e - h - head.size());
    }
    i = close + 1;
  }
  return {};
}

void append_turn(std::string& out, const std::string& role, const std::string& content) {
  out.append(k_start).append(role).append("\n").append(content).append(k_end).append("\n");
}

}  // namespace

chat_template::chat_template(std::string source) : source_(std::move(source)) {
  supported_ = source_.find(k_start) != std::string::npos && source_.find(k_end) != std::string::npos;
  if (supported_) default_system_ = find_default_system(source_);
}

std::string chat_template::apply(const std::vector<chat_message>& messages, bool add_generation_prompt) const {
  if (!supported_) {
    throw invalid_argument_error(source_.empty()
        ? "chat formatting is unsupported: the model has no chat template"
        : "chat formatting is unsupported for this template (only ChatML-style templates with "
          "<|im_start|>/<|im_end|> are); pass a raw prompt instead");
  }
  if (messages.empty() && !add_generation_prompt) {
    throw invalid_argument_error("chat formatting: no messages and no generation prompt to format");
  }
  std::string out;
  if (!default_system_.empty() && !messages.empty() && messages.front().role != "system") {
    append_turn(out, "system", default_system_);
  }
  for (const chat_message& m : messages) {
    if (m.role.empty() || m.role.find('\n') != std::string::npos) {
      throw invalid_argument_error("chat formatting: invalid role '" + m.role + "'");
    }
    append_turn(out, m.role, m.content);
  }
  if (add_generation_prompt) out.append(k_start).append("assistant\n");
  return out;
}

}  // namespace dspark

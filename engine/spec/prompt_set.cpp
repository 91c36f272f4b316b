// Prompt sets: JSONL first turns and chat-template encoding.
#include "engine/spec/prompt_set.h"

#include <fstream>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/tokenizer/chat_template.h"
#include "models/tokenizer/tokenizer.h"

namespace dspark {

std::vector<std::string> read_first_turns(const std::string& path, int64_t limit) {
  std::ifstream in(path);
  if (!in) throw format_error("prompt set " + path + ": cannot open the file");
  std::vector<std::string> out;
  std::string line;
  int64_t line_no = 0;
  while ((limit <= 0 || static_cast<int64_t>(out.size()) < limit) && std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("turns") || !j["turns"].is_array() ||
        j["turns"].empty() || !j["turns"][0].is_string())
      throw format_error("prompt set " + path + " line " + std::to_string(line_no) +
                         ": expected {\"turns\": [\"...\", ...]}");
    out.push_back(j["turns"][0].get<std::string>());
  }
  return out;
}

std::vector<int32_t> encode_chat_prompt(const tokenizer& tok, const std::string& text) {
  const chat_template tmpl(tok.chat_template());
  const std::vector<chat_message> msgs = {{"user", text}};
  // The rendered template carries its own BOS when the model wants one.
  return tok.encode(tmpl.apply(msgs, /*add_generation_prompt=*/true), /*parse_special=*/true,
                    /*add_special=*/false);
}

}  // namespace dspark

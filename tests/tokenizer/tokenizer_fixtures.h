// Shared helpers of the tokenizer tests: reading the JSON fixtures that
// scripts/make_tokenizer_fixtures.py wrote with Hugging Face as the reference.
#pragma once

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "models/tokenizer/chat_template.h"
#include "tests/test_support.h"

namespace dspark::test {

inline std::string tokenizer_data(const std::string& rel) { return data_path("tokenizer/data/" + rel); }

inline std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << "cannot open " << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

inline nlohmann::json load_fixture(const std::string& rel) {
  return nlohmann::json::parse(read_text_file(tokenizer_data(rel)));
}

inline std::vector<chat_message> fixture_messages(const nlohmann::json& msgs) {
  std::vector<chat_message> out;
  for (const auto& m : msgs) out.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  return out;
}

// Printable form of a string for failure messages (control bytes escaped).
inline std::string escaped(const std::string& s) {
  return nlohmann::json(s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace dspark::test

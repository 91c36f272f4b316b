// Malformed input: broken or unsupported tokenizer.json / tokenizer_config.json, GGUF files with
// missing keys or bad merges (data/gguf/*, written by scripts/make_tokenizer_fixtures.py), and a
// random-mutation fuzz of tokenizer.json loading. Every failure must be a format_error with a
// message, never a crash or another exception type.
#include <random>

#include <gtest/gtest.h>

#include "common/error.h"
#include "models/formats/gguf.h"
#include "models/tokenizer/tokenizer.h"
#include "tokenizer_fixtures.h"

namespace dspark {
namespace {

using json = nlohmann::json;

json tiny_json() { return json::parse(test::read_text_file(test::tokenizer_data("tiny_gpt2/tokenizer.json"))); }

// Expects from_hf_json to throw format_error whose message contains `needle`.
void expect_format_error(const std::string& tok_json, const std::string& needle, const std::string& cfg = "") {
  try {
    tokenizer::from_hf_json(tok_json, cfg);
    ADD_FAILURE() << "expected format_error mentioning '" << needle << "'";
  } catch (const format_error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(TokenizerErrors, MalformedTokenizerJson) {
  expect_format_error("", "not valid JSON");
  expect_format_error("{\"model\": ", "not valid JSON");
  expect_format_error("[]", "not a JSON object");
  expect_format_error("{}", "'model'");

  json j = tiny_json();
  j["model"]["vocab"] = json::array();
  expect_format_error(j.dump(), "model.vocab is not an object");

  j = tiny_json();
  j["model"]["merges"][3] = "ab";
  expect_format_error(j.dump(), "merge 3");
  j["model"]["merges"][3] = "a b c";
  expect_format_error(j.dump(), "merge 3");
  j["model"]["merges"][3] = json::array({1, 2});
  expect_format_error(j.dump(), "merge 3");
  j["model"]["merges"][3] = "\xC4\x80zz \xC4\x81qq";
  expect_format_error(j.dump(), "not in the vocabulary");

  j = tiny_json();
  j["model"]["vocab"]["!"] = -3;
  expect_format_error(j.dump(), "outside");
  j["model"]["vocab"]["!"] = 2000000000;
  expect_format_error(j.dump(), "outside");
  j["model"]["vocab"]["!"] = "three";
  expect_format_error(j.dump(), "non-integer id");
  j["model"]["vocab"]["!"] = 4;  // also the id of '"'
  expect_format_error(j.dump(), "used by two");

  j = tiny_json();
  j["added_tokens"][0]["content"] = "";
  expect_format_error(j.dump(), "empty");
}

TEST(TokenizerErrors, UnsupportedTokenizerJson) {
  json j = tiny_json();
  j["model"]["type"] = "WordPiece";
  expect_format_error(j.dump(), "not supported");
  j = tiny_json();
  j["model"]["byte_fallback"] = true;
  expect_format_error(j.dump(), "byte_fallback");
  j = tiny_json();
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  expect_format_error(j.dump(), "Metaspace");
  j = tiny_json();
  j["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", true}};
  expect_format_error(j.dump(), "add_prefix_space");
  j = tiny_json();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_format_error(j.dump(), "cannot compile");
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "x"}}}, {"behavior", "Sideways"}};
  expect_format_error(j.dump(), "Sideways");
  j = tiny_json();
  j["normalizer"] = {{"type", "Lowercase"}};
  expect_format_error(j.dump(), "normalizer");
  j = tiny_json();
  j["decoder"] = nullptr;
  expect_format_error(j.dump(), "decoder");
}

TEST(TokenizerErrors, MalformedConfig) {
  const std::string tok = tiny_json().dump();
  expect_format_error(tok, "not valid JSON", "{oops");
  expect_format_error(tok, "not a token", R"({"eos_token": "<|nope|>"})");
  expect_format_error(tok, "add_bos_token", R"({"add_bos_token": "yes"})");
  // A valid config object form is accepted.
  const tokenizer t = tokenizer::from_hf_json(tok, R"({"eos_token": {"content": "<|im_end|>"}, "chat_template": null})");
  EXPECT_EQ(t.eos_id(), t.token_to_id("<|im_end|>"));
}

TEST(TokenizerErrors, MissingFiles) {
  EXPECT_THROW(tokenizer::from_hf_files("/nonexistent/tokenizer.json"), format_error);
  EXPECT_THROW(tokenizer::from_hf_files(test::tokenizer_data("tiny_gpt2/tokenizer.json"), "/nonexistent/cfg.json"),
               format_error);
}

TEST(TokenizerErrors, BrokenGgufTokenizerMetadata) {
  const std::pair<const char*, const char*> cases[] = {
      {"missing_tokens", "tokenizer.ggml.tokens"},     {"missing_merges", "tokenizer.ggml.merges"},
      {"missing_model", "tokenizer.ggml.model"},       {"wrong_model", "'llama'"},
      {"unknown_pre", "no-such-pre"},                  {"merge_without_space", "merge 10"},
      {"merge_unknown_token", "not in the vocabulary"}, {"short_token_types", "token_type"},
      {"bad_token_type", "type 9"},                    {"bos_out_of_range", "bos_token_id"},
      {"tokens_not_strings", "tokenizer.ggml.tokens"},
  };
  for (const auto& [file, needle] : cases) {
    const gguf_file f = gguf_file::open(test::tokenizer_data(std::string("gguf/") + file + ".gguf"));
    try {
      tokenizer::from_gguf(f);
      ADD_FAILURE() << file << ": expected format_error";
    } catch (const format_error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << file << ": " << e.what();
    }
  }
}

// Loads mutated text; a successful load must also encode and decode without trouble.
void load_or_format_error(const std::string& text) {
  try {
    const tokenizer t = tokenizer::from_hf_json(text);
    for (const char* s : {"Hello, world! 123", "日本 😀", "<|im_start|>x", "\xFF\xC3"}) {
      const auto ids = t.encode(s);
      (void)t.decode(ids);
    }
  } catch (const format_error&) {
    // expected for most mutations
  }
}

TEST(TokenizerFuzz, RandomByteMutationsOfTokenizerJson) {
  const std::string base = tiny_json().dump();
  std::mt19937 rng(20240611);
  const char specials[] = "{}[]\",:0123456789- \\";
  for (int round = 0; round < 400; ++round) {
    std::string s = base;
    const int edits = 1 + int(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const size_t pos = rng() % s.size();
      switch (rng() % 4) {
        case 0: s[pos] = char(rng() & 0xFF); break;
        case 1: s[pos] = specials[rng() % (sizeof(specials) - 1)]; break;
        case 2: s.erase(pos, 1 + rng() % 16); break;
        default: s.insert(pos, s.substr(rng() % s.size(), 1 + rng() % 32)); break;
      }
      if (s.empty()) s.push_back('{');
    }
    SCOPED_TRACE("round " + std::to_string(round));
    EXPECT_NO_THROW(load_or_format_error(s));
  }
}

TEST(TokenizerFuzz, RandomStructuralMutationsOfTokenizerJson) {
  const json base = tiny_json();
  std::mt19937 rng(7);
  const json replacements[] = {nullptr, 0, -1, 123456789, 1.5, true, "", "x", json::array(), json::object(),
                               json::array({"a", "b"}), json::array({json::array({"Ġ", "t"})})};
  for (int round = 0; round < 400; ++round) {
    json j = base;
    // Walk to a random node through objects and arrays, then replace it.
    json* node = &j;
    for (int depth = 0; depth < 4; ++depth) {
      if (node->is_object() && !node->empty()) {
        auto it = node->begin();
        std::advance(it, rng() % node->size());
        node = &it.value();
      } else if (node->is_array() && !node->empty()) {
        node = &(*node)[rng() % node->size()];
      } else {
        break;
      }
      if (rng() % 3 == 0) break;
    }
    *node = replacements[rng() % std::size(replacements)];
    SCOPED_TRACE("round " + std::to_string(round));
    EXPECT_NO_THROW(load_or_format_error(j.dump()));
  }
}

}  // namespace
}  // namespace dspark

// OpenAI request bodies -> protocol submits, and done replies / stream events -> OpenAI JSON
// and SSE chunks, each compared with hand-written expected values.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "services/gateway/openai_mapping.h"

namespace gw = dspark::gateway;
namespace dm = dspark::messages;
using nlohmann::json;

namespace {

gw::openai_request parse_ok(const std::string& body, gw::api_kind kind) {
  auto r = gw::parse_openai_request(body, kind);
  EXPECT_TRUE(std::holds_alternative<gw::openai_request>(r))
      << body << " -> " << (std::holds_alternative<gw::api_error>(r) ? std::get<gw::api_error>(r).message : "");
  return std::holds_alternative<gw::openai_request>(r) ? std::get<gw::openai_request>(r) : gw::openai_request{};
}

gw::api_error parse_err(const std::string& body, gw::api_kind kind = gw::api_kind::chat) {
  auto r = gw::parse_openai_request(body, kind);
  EXPECT_TRUE(std::holds_alternative<gw::api_error>(r)) << "accepted: " << body;
  return std::holds_alternative<gw::api_error>(r) ? std::get<gw::api_error>(r) : gw::api_error{};
}

json sse_json(const std::string& event) {
  EXPECT_EQ(event.substr(0, 6), "data: ");
  EXPECT_EQ(event.substr(event.size() - 2), "\n\n");
  return json::parse(event.substr(6, event.size() - 8));
}

const gw::response_meta k_chat{gw::api_kind::chat, "chatcmpl-1", "smollm2", 1700000000};
const gw::response_meta k_text{gw::api_kind::completions, "cmpl-2", "smollm2", 1700000001};

}  // namespace

TEST(OpenAiMapping, ChatRequestMapsEveryParameter) {
  auto r = parse_ok(R"({"model":"m","messages":[{"role":"developer","content":"Be brief"},
      {"role":"user","content":[{"type":"text","text":"Hi "},{"type":"text","text":"there"}]}],
      "max_tokens":12,"temperature":0,"top_p":0.5,"stop":"\n","seed":7,"n":1,"stream":true,
      "stream_options":{"include_usage":true},"top_k":3,"min_p":0.1,"presence_penalty":0,"user":"u"})",
                    gw::api_kind::chat);
  EXPECT_EQ(r.model, std::optional<std::string>("m"));
  EXPECT_EQ(std::get<dm::chat_prompt>(r.input).messages,
            (std::vector<dm::chat_message>{{"system", "Be brief"}, {"user", "Hi there"}}));
  dm::sampling_params expected;
  expected.max_tokens = 12;
  expected.temperature = 0;
  expected.top_p = 0.5;
  expected.stop = {"\n"};
  expected.seed = 7;
  expected.top_k = 3;
  expected.min_p = 0.1;
  EXPECT_EQ(r.params, expected);
  EXPECT_TRUE(r.stream);
  EXPECT_TRUE(r.include_usage);
}

TEST(OpenAiMapping, DefaultsFollowOpenAi) {
  auto r = parse_ok(R"({"messages":[{"role":"user","content":"x"}]})", gw::api_kind::chat);
  EXPECT_EQ(r.params.temperature, 1.0);
  EXPECT_EQ(r.params.max_tokens, 256);
  EXPECT_FALSE(r.stream);
  auto c = parse_ok(R"({"prompt":"x","max_completion_tokens":3,"stop":["a","b"]})", gw::api_kind::completions);
  EXPECT_EQ(c.params.max_tokens, 3);
  EXPECT_EQ(c.params.stop, (std::vector<std::string>{"a", "b"}));
}

TEST(OpenAiMapping, CompletionPromptForms) {
  EXPECT_EQ(std::get<dm::text_prompt>(parse_ok(R"({"prompt":"abc"})", gw::api_kind::completions).input).text, "abc");
  EXPECT_EQ(std::get<dm::text_prompt>(parse_ok(R"({"prompt":["abc"]})", gw::api_kind::completions).input).text, "abc");
  EXPECT_EQ(std::get<dm::token_prompt>(parse_ok(R"({"prompt":[1,2]})", gw::api_kind::completions).input).tokens,
            (std::vector<int32_t>{1, 2}));
  EXPECT_EQ(std::get<dm::token_prompt>(parse_ok(R"({"prompt":[[5]]})", gw::api_kind::completions).input).tokens,
            (std::vector<int32_t>{5}));
  EXPECT_EQ(parse_err(R"({"prompt":["a","b"]})", gw::api_kind::completions).param, "prompt");
  EXPECT_EQ(parse_err(R"({"prompt":[-1]})", gw::api_kind::completions).param, "prompt");
  EXPECT_EQ(parse_err(R"({})", gw::api_kind::completions).param, "prompt");
}

TEST(OpenAiMapping, InvalidOrUnsupportedParametersAre400WithTheParam) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"("n":2)", "n"},
      {R"("temperature":2.5)", "temperature"},
      {R"("temperature":"0")", "temperature"},
      {R"("top_p":0)", "top_p"},
      {R"("max_tokens":0)", "max_tokens"},
      {R"("max_tokens":1.5)", "max_tokens"},
      {R"("seed":-3)", "seed"},
      {R"("stop":[1])", "stop"},
      {R"("stop":["1","2","3","4","5","6","7","8","9"])", "stop"},
      {R"("presence_penalty":0.5)", "presence_penalty"},
      {R"("frequency_penalty":1)", "frequency_penalty"},
      {R"("logprobs":true)", "logprobs"},
      {R"("logit_bias":{"5":1})", "logit_bias"},
      {R"("tools":[{"type":"function"}])", "tools"},
      {R"("response_format":{"type":"json_object"})", "response_format"},
      {R"("stream":"yes")", "stream"},
      {R"("model":5)", "model"}};
  for (const auto& [field, param] : cases) {
    auto e = parse_err(R"({"messages":[{"role":"user","content":"x"}],)" + field + "}");
    EXPECT_EQ(e.status, 400) << field;
    EXPECT_EQ(e.param, param) << field << " -> " << e.message;
  }
  EXPECT_EQ(parse_err(R"({"messages":[{"role":"tool","content":"x"}]})").param, "messages");
  EXPECT_EQ(parse_err(R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})").param, "messages");
  EXPECT_EQ(parse_err(R"({"messages":[]})").param, "messages");
  EXPECT_EQ(parse_err("{not json").status, 400);
  EXPECT_EQ(parse_err("[1]").status, 400);
  EXPECT_EQ(parse_err(std::string(10000, '[') + std::string(10000, ']')).status, 400);
}

TEST(OpenAiMapping, ErrorBodyAndProtocolStatus) {
  EXPECT_EQ(json::parse(gw::error_body({400, "bad n", "invalid_request_error", "n", ""})),
            json::parse(R"({"error":{"message":"bad n","type":"invalid_request_error","param":"n","code":null}})"));
  EXPECT_EQ(gw::error_from_protocol(dm::error_code::overloaded, "full").status, 429);
  EXPECT_EQ(gw::error_from_protocol(dm::error_code::too_large, "big").status, 413);
  EXPECT_EQ(gw::error_from_protocol(dm::error_code::invalid_params, "p").status, 400);
  EXPECT_EQ(gw::error_from_protocol(dm::error_code::internal, "i").status, 500);
}

TEST(OpenAiMapping, NonStreamingBodies) {
  dm::done_reply done{"r1", "Paris.", {1, 2}, dm::finish_reason::stop, {20, 2, 0.1, 0.01, 50, 1, 2, 0, 0}};
  EXPECT_EQ(json::parse(gw::completion_body(k_chat, done)), json::parse(R"({"id":"chatcmpl-1","object":"chat.completion",
      "created":1700000000,"model":"smollm2","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},
      "logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":20,"completion_tokens":2,"total_tokens":22}})"));
  done.reason = dm::finish_reason::context_full;
  EXPECT_EQ(json::parse(gw::completion_body(k_text, done)), json::parse(R"({"id":"cmpl-2","object":"text_completion",
      "created":1700000001,"model":"smollm2","choices":[{"index":0,"text":"Paris.","logprobs":null,
      "finish_reason":"length"}],"usage":{"prompt_tokens":20,"completion_tokens":2,"total_tokens":22}})"));
  done.stats.cached_tokens = 16;  // the prefix cache served 16 prompt tokens: OpenAI's usage detail
  EXPECT_EQ(json::parse(gw::completion_body(k_text, done))["usage"],
            json::parse(R"({"prompt_tokens":20,"completion_tokens":2,"total_tokens":22,
                "prompt_tokens_details":{"cached_tokens":16}})"));
}

TEST(OpenAiMapping, SseChunksHaveTheOpenAiShape) {
  const json base = json::parse(R"({"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"smollm2"})");
  json role = base;
  role["choices"] = json::parse(R"([{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}])");
  EXPECT_EQ(sse_json(gw::sse_role_chunk(k_chat)), role);
  json text = base;
  text["choices"] = json::parse(R"([{"index":0,"delta":{"content":"Hel"},"logprobs":null,"finish_reason":null}])");
  EXPECT_EQ(sse_json(gw::sse_text_chunk(k_chat, "Hel")), text);
  json fin = base;
  fin["choices"] = json::parse(R"([{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}])");
  EXPECT_EQ(sse_json(gw::sse_finish_chunk(k_chat, dm::finish_reason::length)), fin);
  json usage = base;
  usage["choices"] = json::array();
  usage["usage"] = json::parse(R"({"prompt_tokens":3,"completion_tokens":4,"total_tokens":7})");
  EXPECT_EQ(sse_json(gw::sse_usage_chunk(k_chat, {3, 4, 0, 0, 0, 0, 0, 0, 0})), usage);
  EXPECT_EQ(sse_json(gw::sse_text_chunk(k_text, "lo")),
            json::parse(R"({"id":"cmpl-2","object":"text_completion","created":1700000001,"model":"smollm2",
                "choices":[{"index":0,"text":"lo","logprobs":null,"finish_reason":null}]})"));
  EXPECT_EQ(gw::k_sse_done, "data: [DONE]\n\n");
}

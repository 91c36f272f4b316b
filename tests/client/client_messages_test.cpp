// The client protocol codec against hand-written frames of docs/protocol.md: every message type
// round-trips, the wire form is the documented one, and each kind of invalid input gets the
// documented error code with the field named.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "messages/client_messages.h"

namespace dm = dspark::messages;
using nlohmann::json;

namespace {

dm::client_message decode_client_ok(const std::string& frame) {
  auto r = dm::decode_client_message(frame);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message) << " for " << frame;
  return r.ok() ? r.value() : dm::client_message{dm::health_request{}};
}

dm::decode_error decode_client_err(const std::string& frame) {
  auto r = dm::decode_client_message(frame);
  EXPECT_FALSE(r.ok()) << "accepted: " << frame;
  return r.ok() ? dm::decode_error{} : r.error();
}

}  // namespace

TEST(ClientMessages, DecodesTheDocumentedExample) {
  auto m = decode_client_ok(
      R"({"v":1,"type":"submit","id":"a1","messages":[{"role":"user","content":"Hi"}],)"
      R"("params":{"max_tokens":8,"temperature":0},"stream":true})");
  const auto& s = std::get<dm::submit_request>(m);
  EXPECT_EQ(s.id, "a1");
  EXPECT_EQ(std::get<dm::chat_prompt>(s.input).messages, (std::vector<dm::chat_message>{{"user", "Hi"}}));
  EXPECT_EQ(s.params.max_tokens, 8);
  EXPECT_EQ(s.params.temperature, 0.0);
  EXPECT_EQ(s.params.top_p, 1.0);  // defaults for absent fields
  EXPECT_FALSE(s.params.seed.has_value());
  EXPECT_TRUE(s.stream);
}

TEST(ClientMessages, SubmitEncodesToTheDocumentedFields) {
  dm::submit_request s;
  s.id = "x";
  s.input = dm::text_prompt{"Once upon"};
  s.params.max_tokens = 5;
  s.params.seed = 18446744073709551615ull;  // full uint64 range survives
  s.params.stop = {"\n\n"};
  s.stream = false;
  const json expected = json::parse(R"({"v":1,"type":"submit","id":"x","prompt":"Once upon",
      "params":{"max_tokens":5,"temperature":0.0,"top_k":0,"top_p":1.0,"min_p":0.0,"ignore_eos":false,
                "seed":18446744073709551615,"stop":["\n\n"]},"stream":false})");
  EXPECT_EQ(json::parse(dm::encode(s)), expected);
  EXPECT_EQ(std::get<dm::submit_request>(decode_client_ok(dm::encode(s))), s);
}

TEST(ClientMessages, EveryClientMessageRoundTrips) {
  std::vector<dm::client_message> all = {
      dm::submit_request{"t", dm::token_prompt{{1, 2, 2147483647}}, {}, true},
      dm::submit_request{"c", dm::chat_prompt{{{"system", "be brief"}, {"user", "héllo ✓"}}}, {}, true},
      dm::cancel_request{"t"}, dm::metrics_request{}, dm::models_request{}, dm::health_request{}};
  for (const auto& m : all) EXPECT_EQ(decode_client_ok(dm::encode(m)), m) << dm::encode(m);
  EXPECT_EQ(json::parse(dm::encode(dm::cancel_request{"q"})), json::parse(R"({"v":1,"type":"cancel","id":"q"})"));
  EXPECT_EQ(json::parse(dm::encode(dm::health_request{})), json::parse(R"({"v":1,"type":"health"})"));
}

TEST(ClientMessages, EveryServerMessageRoundTrips) {
  dm::done_reply done{"a1", "Hello!", {19556, 17}, dm::finish_reason::length,
                      {25, 2, 0.01, 0.002, 500.0, 1.5, 2, 4, 1, 16}};
  std::vector<dm::server_message> all = {
      dm::accepted_reply{"a1", 25},
      dm::tokens_reply{"a1", {19556}, "Hello"},
      done,
      dm::error_reply{std::nullopt, dm::error_code::too_large, "too big"},
      dm::error_reply{"a1", dm::error_code::overloaded, "queue full"},
      dm::metrics_reply{"# TYPE x counter\nx 1\n"},
      dm::models_reply{{{"smollm2", 8192, "ngram"}, {"other", 2048, ""}}},
      dm::health_reply{dm::health_status::draining, 3, 4}};
  for (const auto& m : all) {
    auto r = dm::decode_server_message(dm::encode(m));
    ASSERT_TRUE(r.ok()) << r.error().message;
    EXPECT_EQ(r.value(), m) << dm::encode(m);
  }
  const json expected = json::parse(R"({"v":1,"type":"done","id":"a1","text":"Hello!","token_ids":[19556,17],
      "finish_reason":"length","stats":{"prompt_tokens":25,"completion_tokens":2,"ttft_s":0.01,"tpot_s":0.002,
      "tokens_per_s":500.0,"acceptance_length":1.5,"verify_steps":2,"draft_tokens_proposed":4,
      "draft_tokens_accepted":1,"cached_tokens":16}})");
  EXPECT_EQ(json::parse(dm::encode(done)), expected);
  // Servers from before prefix caching send no cached_tokens: it reads as 0.
  json old = expected;
  old["stats"].erase("cached_tokens");
  auto r_old = dm::decode_server_message(old.dump());
  ASSERT_TRUE(r_old.ok()) << r_old.error().message;
  EXPECT_EQ(std::get<dm::done_reply>(r_old.value()).stats.cached_tokens, 0);
  EXPECT_EQ(json::parse(dm::encode(dm::error_reply{std::nullopt, dm::error_code::internal, "m"})),
            json::parse(R"({"v":1,"type":"error","code":"internal","message":"m"})"));
}

TEST(ClientMessages, InvalidParamsNameTheFieldAndKeepTheId) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"("max_tokens":0)", "params.max_tokens"},      {R"("max_tokens":1.5)", "params.max_tokens"},
      {R"("max_tokens":99999999999999999999)", "params.max_tokens"},
      {R"("temperature":-0.1)", "params.temperature"}, {R"("temperature":"hot")", "params.temperature"},
      {R"("top_k":-1)", "params.top_k"},
      {R"("top_p":0)", "params.top_p"},                {R"("top_p":1.01)", "params.top_p"},
      {R"("min_p":1)", "params.min_p"},                {R"("seed":-1)", "params.seed"},
      {R"("stop":"x")", "params.stop"},                {R"("stop":[""])", "params.stop"},
      {R"("stop":["1","2","3","4","5","6","7","8","9"])", "params.stop"},
      {R"("ignore_eos":1)", "params.ignore_eos"}};
  for (const auto& [field, name] : cases) {
    auto e = decode_client_err(R"({"v":1,"type":"submit","id":"r7","prompt":"p","params":{)" + field + "}}");
    EXPECT_EQ(e.code, dm::error_code::invalid_params) << field;
    EXPECT_NE(e.message.find(name), std::string::npos) << e.message;
    EXPECT_EQ(e.id, std::optional<std::string>("r7")) << field;
  }
}

TEST(ClientMessages, ParamsMustBeAnObject) {
  EXPECT_EQ(decode_client_err(R"({"v":1,"type":"submit","id":"a","prompt":"x","params":[]})").code,
            dm::error_code::invalid_params);
}

TEST(ClientMessages, MalformedFramesAreBadRequests) {
  const std::vector<std::string> frames = {
      "", "{", "[]", "42", R"({"type":"health"})", R"({"v":2,"type":"health"})", R"({"v":"1","type":"health"})",
      R"({"v":1})", R"({"v":1,"type":"launch"})", R"({"v":1,"type":7})",
      R"({"v":1,"type":"submit","id":"a"})",                                     // no input
      R"({"v":1,"type":"submit","id":"a","prompt":"x","prompt_tokens":[1]})",    // two inputs
      R"({"v":1,"type":"submit","id":"","prompt":"x"})",                          // empty id
      R"({"v":1,"type":"submit","id":")" + std::string(129, 'i') + R"(","prompt":"x"})",
      R"({"v":1,"type":"submit","prompt":"x"})",                                   // no id
      R"({"v":1,"type":"submit","id":"a","prompt_tokens":[]})",
      R"({"v":1,"type":"submit","id":"a","prompt_tokens":[-1]})",
      R"({"v":1,"type":"submit","id":"a","prompt_tokens":[2147483648]})",
      R"({"v":1,"type":"submit","id":"a","messages":[]})",
      R"({"v":1,"type":"submit","id":"a","messages":[{"role":"robot","content":"x"}]})",
      R"({"v":1,"type":"submit","id":"a","messages":[{"role":"user"}]})",
      R"({"v":1,"type":"submit","id":"a","prompt":"x","stream":"yes"})",
      R"({"v":1,"type":"submit","id":"a","prompt":"x","params":{"temperature":1e400}})",  // overflow
      "{\"v\":1,\"type\":\"submit\",\"id\":\"a\",\"prompt\":\"\xff\xfe\"}",       // invalid UTF-8
      R"({"v":1,"type":"cancel"})"};
  for (const auto& f : frames) EXPECT_EQ(decode_client_err(f).code, dm::error_code::bad_request) << f;
}

TEST(ClientMessages, OversizedAndDeepFramesAreRefusedUnparsed) {
  const std::string big = R"({"v":1,"type":"submit","id":"a","prompt":")" + std::string(2000, 'x') + "\"}";
  auto e = dm::decode_client_message(big, 1000);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code, dm::error_code::too_large);
  EXPECT_FALSE(e.error().id.has_value());  // never parsed, so never attributed
  EXPECT_TRUE(dm::decode_client_message(big, 4096).ok());
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  EXPECT_EQ(decode_client_err(deep).code, dm::error_code::bad_request);
  // Brackets inside strings do not count as nesting.
  EXPECT_TRUE(dm::decode_client_message(R"({"v":1,"type":"submit","id":"a","prompt":")" + std::string(100, '[') +
                                        "\"}").ok());
}

TEST(ClientMessages, UnknownExtraFieldsAreIgnored) {
  auto m = decode_client_ok(R"({"v":1,"type":"cancel","id":"a","future_field":{"x":[1,2]}})");
  EXPECT_EQ(std::get<dm::cancel_request>(m).id, "a");
}

TEST(ClientMessages, InvalidServerFramesAreRejected) {
  for (const std::string f : {R"({"v":1,"type":"done","id":"a","text":"","token_ids":[],"finish_reason":"bored",
                                  "stats":{}})",
                              R"({"v":1,"type":"error","code":"oops","message":"m"})",
                              R"({"v":1,"type":"health","status":"fine","active_requests":0,"queued_requests":0})",
                              R"({"v":1,"type":"tokens","id":"a","token_ids":[1]})",
                              R"({"v":1,"type":"submit","id":"a","prompt":"x"})"}) {
    auto r = dm::decode_server_message(f);
    EXPECT_FALSE(r.ok()) << f;
  }
}

TEST(ClientMessages, EncodingReplacesInvalidUtf8InsteadOfThrowing) {
  const std::string frame = dm::encode(dm::tokens_reply{"a", {1}, std::string("ab\xff", 3)});
  auto r = dm::decode_server_message(frame);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(std::get<dm::tokens_reply>(r.value()).text, "ab\xEF\xBF\xBD");  // U+FFFD
}

TEST(ClientMessages, ErrorCodeAndFinishReasonNamesRoundTrip) {
  for (auto c : {dm::error_code::bad_request, dm::error_code::invalid_params, dm::error_code::too_large,
                 dm::error_code::overloaded, dm::error_code::unknown_id, dm::error_code::duplicate_id,
                 dm::error_code::internal})
    EXPECT_EQ(dm::parse_error_code(dm::to_string(c)), c);
  EXPECT_FALSE(dm::parse_error_code("nope").has_value());
  EXPECT_EQ(dm::parse_finish_reason("context_full"), dm::finish_reason::context_full);
}

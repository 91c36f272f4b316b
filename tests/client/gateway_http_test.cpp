// The gateway over real HTTP (cpp-httplib client) against a scripted server: routes, SSE
// framing, status codes (400, 401, 413, 429), that it keeps serving after bad input, and that
// a client leaving mid-stream makes the gateway send `cancel`.
#include <gtest/gtest.h>

#include <httplib.h>

#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "services/gateway/gateway.h"
#include "tests/client/fake_server.h"

namespace gw = dspark::gateway;
namespace dm = dspark::messages;
using dspark::testing::fake_server;
using nlohmann::json;

namespace {

// Streams "a", "b", "c" (or refuses when the prompt is "busy"); "slow" streams a token every
// 50 ms for 10 s unless cancelled.
std::vector<dm::server_message> script(const dm::client_message& m) {
  std::vector<dm::server_message> out;
  if (auto* s = std::get_if<dm::submit_request>(&m)) {
    auto* t = std::get_if<dm::text_prompt>(&s->input);
    if (t && t->text == "busy") return {dm::error_reply{s->id, dm::error_code::overloaded, "queue full"}};
    out.push_back(dm::accepted_reply{s->id, 4});
    if (t && t->text == "slow") return out;
    if (s->stream)
      for (std::string piece : {"a", "b", "c"}) out.push_back(dm::tokens_reply{s->id, {1}, piece});
    out.push_back(dm::done_reply{s->id, "abc", {1, 1, 1}, dm::finish_reason::length, {4, 3, 0, 0, 0, 0, 3, 0, 0}});
  } else if (auto* c = std::get_if<dm::cancel_request>(&m)) {
    out.push_back(dm::done_reply{c->id, "", {}, dm::finish_reason::cancelled, {}});
  } else if (std::holds_alternative<dm::models_request>(m)) {
    out.push_back(dm::models_reply{{{"smollm2-135m", 8192, ""}}});
  } else if (std::holds_alternative<dm::health_request>(m)) {
    out.push_back(dm::health_reply{dm::health_status::ok, 0, 0});
  } else if (std::holds_alternative<dm::metrics_request>(m)) {
    out.push_back(dm::metrics_reply{"dspark_requests_total 3\n"});
  }
  return out;
}

class running_gateway {
 public:
  explicit running_gateway(const std::string& endpoint, std::string api_key = "") {
    gw::gateway_options o;
    o.port = 0;
    o.server_endpoint = endpoint;
    o.api_key = std::move(api_key);
    o.max_body_bytes = 4096;
    o.server_timeout = std::chrono::seconds(10);
    std::promise<int> bound;
    o.on_listening = [&bound](int port) { bound.set_value(port); };
    thread_ = std::thread([this, o] { rc_ = gw::run_gateway(o, stop_); });
    port_ = bound.get_future().get();
  }
  ~running_gateway() {
    stop_ = true;
    thread_.join();
  }
  httplib::Client http(const std::string& key = "") const {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(10, 0);
    if (!key.empty()) c.set_bearer_token_auth(key.c_str());
    return c;
  }

 private:
  std::atomic<bool> stop_{false};
  int rc_ = -1;
  int port_ = 0;
  std::thread thread_;
};

const char* k_chat = R"({"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"temperature":0})";

}  // namespace

TEST(GatewayHttp, ChatCompletionAndModelsAndHealth) {
  fake_server server(script);
  running_gateway g(server.endpoint());
  auto c = g.http();
  auto res = c.Post("/v1/chat/completions", k_chat, "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  json body = json::parse(res->body);
  EXPECT_EQ(body["choices"][0]["message"]["content"], "abc");
  EXPECT_EQ(body["model"], "smollm2-135m");
  EXPECT_EQ(body["usage"]["total_tokens"], 7);
  auto sent = std::get<dm::submit_request>(server.received().at(1));  // after the models lookup
  EXPECT_FALSE(sent.stream);
  EXPECT_EQ(sent.params.max_tokens, 3);

  auto models = c.Get("/v1/models");
  ASSERT_TRUE(models);
  EXPECT_EQ(json::parse(models->body)["data"][0]["id"], "smollm2-135m");
  auto health = c.Get("/health");
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
  EXPECT_EQ(json::parse(health->body)["status"], "ok");
  auto metrics = c.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("dspark_requests_total 3\n"), std::string::npos);
  EXPECT_NE(metrics->body.find("dspark_gateway_http_requests_total{endpoint=\"/v1/chat/completions\",status=\"200\"} 1"),
            std::string::npos);
}

TEST(GatewayHttp, SseStreamConcatenatesToTheText) {
  fake_server server(script);
  running_gateway g(server.endpoint());
  auto c = g.http();
  auto res = c.Post("/v1/completions", R"({"prompt":"x","stream":true,"stream_options":{"include_usage":true}})",
                    "application/json");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->get_header_value("Content-Type"), "text/event-stream");
  std::string text, finish;
  bool usage = false, done = false;
  size_t pos = 0;
  while ((pos = res->body.find("data: ", pos)) != std::string::npos) {
    const size_t end = res->body.find("\n\n", pos);
    const std::string payload = res->body.substr(pos + 6, end - pos - 6);
    pos = end;
    if (payload == "[DONE]") {
      done = true;
      continue;
    }
    json j = json::parse(payload);
    if (j.contains("usage")) usage = true;
    if (j["choices"].empty()) continue;
    text += j["choices"][0]["text"].get<std::string>();
    if (!j["choices"][0]["finish_reason"].is_null()) finish = j["choices"][0]["finish_reason"];
  }
  EXPECT_EQ(text, "abc");
  EXPECT_EQ(finish, "length");
  EXPECT_TRUE(usage);
  EXPECT_TRUE(done);
}

TEST(GatewayHttp, BadInputGetsErrorsAndTheGatewayKeepsServing) {
  fake_server server(script);
  running_gateway g(server.endpoint());
  auto c = g.http();
  auto bad = c.Post("/v1/chat/completions", "{\"messages\": [", "application/json");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(json::parse(bad->body)["error"]["type"], "invalid_request_error");
  auto n2 = c.Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"x"}],"n":2})", "application/json");
  ASSERT_TRUE(n2);
  EXPECT_EQ(n2->status, 400);
  EXPECT_EQ(json::parse(n2->body)["error"]["param"], "n");
  auto big = c.Post("/v1/completions", "{\"prompt\":\"" + std::string(10000, 'x') + "\"}", "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  auto busy = c.Post("/v1/completions", R"({"prompt":"busy","stream":true})", "application/json");
  ASSERT_TRUE(busy);
  EXPECT_EQ(busy->status, 429);
  auto busy2 = c.Post("/v1/completions", R"({"prompt":"busy"})", "application/json");
  ASSERT_TRUE(busy2);
  EXPECT_EQ(busy2->status, 429);
  auto missing = c.Get("/v1/nothing");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  auto ok = g.http().Post("/v1/chat/completions", k_chat, "application/json");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
}

TEST(GatewayHttp, ApiKeyIsEnforced) {
  fake_server server(script);
  running_gateway g(server.endpoint(), "s3cret");
  auto none = g.http().Post("/v1/chat/completions", k_chat, "application/json");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->status, 401);
  auto wrong = g.http("s3cre").Get("/v1/models");
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 401);
  auto right = g.http("s3cret").Post("/v1/chat/completions", k_chat, "application/json");
  ASSERT_TRUE(right);
  EXPECT_EQ(right->status, 200);
  auto health = g.http().Get("/health");  // probes need no key
  ASSERT_TRUE(health);
  EXPECT_EQ(health->status, 200);
}

TEST(GatewayHttp, ClientLeavingMidStreamCancelsTheRequest) {
  fake_server server(script);
  running_gateway g(server.endpoint());
  auto c = g.http();
  // Reading stops (the receiver returns false) after the first bytes, closing the connection.
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = R"({"prompt":"slow","stream":true})";
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [](const char*, size_t, uint64_t, uint64_t) { return false; };
  auto res = c.send(req);
  (void)res;
  bool cancelled = false;
  for (int i = 0; i < 100 && !cancelled; ++i) {
    for (const auto& m : server.received()) cancelled = cancelled || std::holds_alternative<dm::cancel_request>(m);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_TRUE(cancelled) << "the gateway never cancelled the abandoned request";
}

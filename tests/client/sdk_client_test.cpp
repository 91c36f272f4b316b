// The C++ SDK against a scripted server (fake_server.h): what it sends decodes to the intended
// protocol messages, replies are routed to the right request, and timeouts, local validation,
// cancellation and server errors surface as documented.
#include <gtest/gtest.h>

#include "sdk/cpp/dspark_client.h"
#include "tests/client/fake_server.h"

namespace dc = dspark::client;
namespace dm = dspark::messages;
using dspark::testing::fake_server;

namespace {

dm::request_stats some_stats() { return {3, 2, 0.01, 0.005, 200.0, 1.0, 2, 0, 0}; }

// Answers a submit with accepted, one tokens message per word, then done.
std::vector<dm::server_message> echo_words(const dm::client_message& m) {
  std::vector<dm::server_message> out;
  if (auto* s = std::get_if<dm::submit_request>(&m)) {
    out.push_back(dm::accepted_reply{s->id, 3});
    out.push_back(dm::tokens_reply{s->id, {10}, "Hello"});
    out.push_back(dm::tokens_reply{s->id, {11}, " " + s->id});
    out.push_back(dm::done_reply{s->id, "Hello " + s->id, {10, 11}, dm::finish_reason::length, some_stats()});
  } else if (auto* c = std::get_if<dm::cancel_request>(&m)) {
    out.push_back(dm::done_reply{c->id, "", {}, dm::finish_reason::cancelled, {}});
  } else if (std::holds_alternative<dm::metrics_request>(m)) {
    out.push_back(dm::metrics_reply{"dspark_requests_total 7\n"});
  } else if (std::holds_alternative<dm::models_request>(m)) {
    out.push_back(dm::models_reply{{{"smollm2", 8192, ""}}});
  } else if (std::holds_alternative<dm::health_request>(m)) {
    out.push_back(dm::health_reply{dm::health_status::ok, 1, 0});
  }
  return out;
}

dc::client_options options_for(const fake_server& s, int timeout_ms = 5000) {
  dc::client_options o;
  o.endpoint = s.endpoint();
  o.timeout = std::chrono::milliseconds(timeout_ms);
  return o;
}

}  // namespace

TEST(SdkClient, StreamsEventsInOrderAndSendsTheIntendedSubmit) {
  fake_server server(echo_words);
  dc::client client(options_for(server));
  dm::sampling_params p;
  p.max_tokens = 7;
  p.temperature = 0.5;
  p.seed = 9;
  dc::request r = client.submit(dc::chat("Hi", "Be brief"), p, true, {}, "q1");
  EXPECT_EQ(std::get<dm::accepted_reply>(r.next()).prompt_tokens, 3);
  EXPECT_EQ(std::get<dm::tokens_reply>(r.next()).text, "Hello");
  EXPECT_EQ(std::get<dm::tokens_reply>(r.next()).text, " q1");
  auto done = std::get<dm::done_reply>(r.next());
  EXPECT_EQ(done.text, "Hello q1");
  EXPECT_EQ(done.reason, dm::finish_reason::length);
  EXPECT_TRUE(r.finished());
  EXPECT_THROW(r.next(), dc::client_error);  // nothing after the end

  auto got = server.received();
  ASSERT_EQ(got.size(), 1u);
  const dm::submit_request expected{"q1", dm::chat_prompt{{{"system", "Be brief"}, {"user", "Hi"}}}, p, true};
  EXPECT_EQ(std::get<dm::submit_request>(got[0]), expected);
}

TEST(SdkClient, ConcurrentRequestsGetTheirOwnReplies) {
  fake_server server(echo_words);
  dc::client client(options_for(server));
  std::vector<dc::request> requests;
  for (int i = 0; i < 20; ++i) requests.push_back(client.submit(dc::text("p" + std::to_string(i))));
  for (auto& r : requests) EXPECT_EQ(r.wait().text, "Hello " + r.id());
}

TEST(SdkClient, CallbackReceivesEveryEvent) {
  fake_server server(echo_words);
  dc::client client(options_for(server));
  std::mutex m;
  std::condition_variable cv;
  std::vector<std::string> seen;
  dc::request r = client.submit(dc::text("x"), {}, true, [&](const dc::stream_event& e) {
    std::lock_guard lock(m);
    seen.push_back(std::visit([](const auto& v) { return dm::encode(dm::server_message{v}); }, e));
    cv.notify_all();
  });
  std::unique_lock lock(m);
  ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(5), [&] { return seen.size() == 4; }));
  EXPECT_NE(seen[3].find("\"type\":\"done\""), std::string::npos);
  EXPECT_TRUE(r.finished());
}

TEST(SdkClient, MetricsModelsHealth) {
  fake_server server(echo_words);
  dc::client client(options_for(server));
  EXPECT_EQ(client.metrics(), "dspark_requests_total 7\n");
  EXPECT_EQ(client.models().models.at(0).id, "smollm2");
  EXPECT_EQ(client.health().active_requests, 1);
}

TEST(SdkClient, CancelAndDroppedHandlesSendCancel) {
  // This server never finishes a request by itself, so only a cancel ends it.
  fake_server server([](const dm::client_message& m) {
    std::vector<dm::server_message> out;
    if (auto* s = std::get_if<dm::submit_request>(&m)) out.push_back(dm::accepted_reply{s->id, 1});
    if (auto* c = std::get_if<dm::cancel_request>(&m))
      out.push_back(dm::done_reply{c->id, "", {}, dm::finish_reason::cancelled, {}});
    return out;
  });
  dc::client client(options_for(server));
  dc::request r = client.submit(dc::text("x"), {}, true, {}, "keep");
  EXPECT_TRUE(std::holds_alternative<dm::accepted_reply>(r.next()));
  r.cancel();
  EXPECT_EQ(r.wait().reason, dm::finish_reason::cancelled);
  { dc::request dropped = client.submit(dc::text("y"), {}, true, {}, "drop"); }
  for (int i = 0; i < 200 && server.received().size() < 4; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto got = server.received();
  ASSERT_EQ(got.size(), 4u);
  EXPECT_EQ(std::get<dm::cancel_request>(got[1]).id, "keep");
  EXPECT_EQ(std::get<dm::cancel_request>(got[3]).id, "drop");
}

TEST(SdkClient, ServerErrorsAreThrownWithTheirCode) {
  fake_server server([](const dm::client_message& m) {
    std::vector<dm::server_message> out;
    if (auto* s = std::get_if<dm::submit_request>(&m))
      out.push_back(dm::error_reply{s->id, dm::error_code::overloaded, "queue full (max_queued 4)"});
    return out;
  });
  dc::client client(options_for(server));
  dc::request r = client.submit(dc::text("x"));
  try {
    r.wait();
    FAIL() << "no error";
  } catch (const dc::client_error& e) {
    EXPECT_EQ(e.kind, dc::error_kind::server);
    EXPECT_EQ(e.code, dm::error_code::overloaded);
    EXPECT_NE(std::string(e.what()).find("queue full"), std::string::npos);
  }
}

TEST(SdkClient, InvalidRequestsAreRefusedBeforeSending) {
  // Submits are only accepted, never finished (until cancelled), so the request with id
  // "same" is certainly still live when its duplicate is submitted.
  fake_server server([](const dm::client_message& m) -> std::vector<dm::server_message> {
    if (auto* s = std::get_if<dm::submit_request>(&m)) return {dm::accepted_reply{s->id, 1}};
    return echo_words(m);
  });
  dc::client_options o = options_for(server);
  o.max_message_bytes = 1000;
  dc::client client(o);
  dm::sampling_params bad;
  bad.top_p = 0;
  try {
    client.submit(dc::text("x"), bad);
    FAIL() << "accepted top_p 0";
  } catch (const dc::client_error& e) {
    EXPECT_EQ(e.kind, dc::error_kind::invalid);
    EXPECT_EQ(e.code, dm::error_code::invalid_params);
  }
  try {
    client.submit(dc::text(std::string(2000, 'x')));
    FAIL() << "accepted an oversized prompt";
  } catch (const dc::client_error& e) {
    EXPECT_EQ(e.code, dm::error_code::too_large);
  }
  dc::request r = client.submit(dc::text("ok"), {}, true, {}, "same");
  EXPECT_THROW(client.submit(dc::text("again"), {}, true, {}, "same"), dc::client_error);
  r.cancel();
  EXPECT_EQ(r.wait().reason, dm::finish_reason::cancelled);
  size_t submits = 0;
  for (const auto& m : server.received()) submits += std::holds_alternative<dm::submit_request>(m);
  EXPECT_EQ(submits, 1u);  // neither the invalid requests nor the duplicate were sent
}

TEST(SdkClient, NoServerTimesOutWithAClearMessage) {
  dc::client_options o;
  o.endpoint = "tcp://127.0.0.1:1";  // nothing listens there
  o.timeout = std::chrono::milliseconds(200);
  dc::client client(o);
  const auto t0 = std::chrono::steady_clock::now();
  dc::request r = client.submit(dc::text("x"));
  try {
    r.next();
    FAIL() << "no timeout";
  } catch (const dc::client_error& e) {
    EXPECT_EQ(e.kind, dc::error_kind::timeout);
    EXPECT_NE(std::string(e.what()).find("tcp://127.0.0.1:1"), std::string::npos);
  }
  EXPECT_THROW(client.health(), dc::client_error);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
}

TEST(SdkClient, BadEndpointIsAClearError) {
  dc::client_options o;
  o.endpoint = "nonsense";
  EXPECT_THROW(dc::client c(o), dc::client_error);
}

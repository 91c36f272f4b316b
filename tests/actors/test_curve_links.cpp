// CURVE on the internal tcp links (server_config link_curve_secret_key): a connecting channel
// that knows the bound side's public key talks to it, both ways; a plain client or one with the
// wrong server key gets nothing through; bad keys are clear errors. Loopback only.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <vector>

#include <zmq.h>

#include "actors/zmq_channel.h"
#include "config/server_config.h"

namespace dspark::actors {
namespace {

using namespace std::chrono_literals;

struct inbox {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<frames> got;

  void push(frames&& f) {
    std::lock_guard<std::mutex> lock(mu);
    got.push_back(std::move(f));
    cv.notify_all();
  }
  // Waits up to `d` for at least n messages; returns how many there are.
  size_t wait(size_t n, std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, d, [&] { return got.size() >= n; });
    return got.size();
  }
};

std::pair<std::string, std::string> keypair() {
  char pub[41], sec[41];
  EXPECT_EQ(zmq_curve_keypair(pub, sec), 0);
  return {std::string(pub, 40), std::string(sec, 40)};
}

channel_options client_of(const std::string& endpoint, const std::string& server_public) {
  channel_options o;
  o.type = zmq::socket_type::dealer;
  o.endpoint = endpoint;
  o.curve_server_public_key = server_public;
  return o;
}

TEST(CurveLinks, OnlyClientsWithTheServerKeyGetThrough) {
  if (!zmq_has("curve")) GTEST_SKIP() << "libzmq built without CURVE";
  zmq::context_t ctx;
  const auto [server_public, server_secret] = keypair();
  EXPECT_EQ(curve_public_key(server_secret), server_public);

  channel_options so;
  so.type = zmq::socket_type::router;
  so.endpoint = "tcp://127.0.0.1:*";
  so.bind = true;
  so.curve_secret_key = server_secret;
  zmq_channel server(ctx, so);
  inbox at_server;
  server.start([&](frames&& f) { at_server.push(std::move(f)); });

  // A plain client and one that trusts another server key: nothing arrives from either.
  zmq_channel plain(ctx, client_of(server.endpoint(), ""));
  plain.start([](frames&&) {});
  zmq_channel wrong(ctx, client_of(server.endpoint(), keypair().first));
  wrong.start([](frames&&) {});
  plain.send({"plain"});
  wrong.send({"wrong key"});

  // The CURVE client with the right key: its message arrives, and the reply comes back.
  zmq_channel good(ctx, client_of(server.endpoint(), server_public));
  inbox at_client;
  good.start([&](frames&& f) { at_client.push(std::move(f)); });
  good.send({"hello"});
  ASSERT_GE(at_server.wait(1, 5s), 1u);
  frames first;
  {
    std::lock_guard<std::mutex> lock(at_server.mu);
    first = at_server.got.front();
  }
  ASSERT_EQ(first.size(), 2u);  // routing id, payload
  EXPECT_EQ(first[1], "hello");
  server.send({first[0], "welcome"});
  ASSERT_GE(at_client.wait(1, 5s), 1u);
  EXPECT_EQ(at_client.got.front(), (frames{"welcome"}));

  EXPECT_EQ(at_server.wait(2, 500ms), 1u) << "a client without the server's key got a message through";
}

TEST(CurveLinks, BadKeysAreClearErrors) {
  zmq::context_t ctx;
  EXPECT_THROW(curve_public_key("too short"), std::runtime_error);
  EXPECT_THROW(zmq_channel(ctx, client_of("tcp://127.0.0.1:1", "short")), std::runtime_error);
  config::server_config c;
  EXPECT_THROW(config::apply_config_json(R"({"link_curve_secret_key": "abc"})", c), std::runtime_error);
  const auto [pub, sec] = keypair();
  config::apply_config_json(R"({"link_curve_secret_key": ")" + sec + R"("})", c);
  EXPECT_EQ(c.link_curve_secret_key, sec);
}

}  // namespace
}  // namespace dspark::actors

// zmq_channel endpoints: a bound tcp endpoint may name its host (tcp://localhost:*, as compose
// stacks write tcp://verifier:5556), which libzmq 4.3.4 alone refuses to bind; a name that does
// not resolve is a clear error naming the endpoint. Loopback only.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>

#include "actors/zmq_channel.h"

namespace dspark::actors {
namespace {

using namespace std::chrono_literals;

channel_options router_at(const std::string& endpoint) {
  channel_options o;
  o.type = zmq::socket_type::router;
  o.endpoint = endpoint;
  o.bind = true;
  return o;
}

TEST(ZmqChannel, BindsATcpHostNameAtItsAddress) {
  zmq::context_t ctx;
  zmq_channel server(ctx, router_at("tcp://localhost:*"));
  const std::string ep = server.endpoint();
  ASSERT_EQ(ep.rfind("tcp://127.0.0.1:", 0), 0u) << ep;
  const std::string port = ep.substr(ep.rfind(':') + 1);
  ASSERT_GT(std::stoi(port), 0);

  std::mutex mu;
  std::condition_variable cv;
  frames got;
  server.start([&](frames&& f) {
    std::lock_guard<std::mutex> lock(mu);
    got = std::move(f);
    cv.notify_all();
  });
  // A client that connects by the same host name reaches it.
  channel_options co;
  co.type = zmq::socket_type::dealer;
  co.endpoint = "tcp://localhost:" + port;
  zmq_channel client(ctx, co);
  client.start([](frames&&) {});
  client.send({"hello"});
  std::unique_lock<std::mutex> lock(mu);
  ASSERT_TRUE(cv.wait_for(lock, 5s, [&] { return !got.empty(); }));
  ASSERT_EQ(got.size(), 2u);  // [routing id][payload]
  EXPECT_EQ(got[1], "hello");
}

TEST(ZmqChannel, UnresolvableBindHostIsAClearError) {
  zmq::context_t ctx;
  try {
    zmq_channel server(ctx, router_at("tcp://no-such-host.invalid:5599"));
    FAIL() << "bound an unresolvable host";
  } catch (const std::runtime_error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("cannot bind tcp://no-such-host.invalid:5599"), std::string::npos) << what;
    EXPECT_NE(what.find("resolvable host name"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace dspark::actors

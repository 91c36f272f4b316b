// A scripted stand-in for a DSpark server in SDK and gateway tests: a ROUTER socket on a
// loopback port whose handler sees each decoded client message and returns the replies.
// Every frame it received is kept so tests can check what the client put on the wire.
#pragma once

#include <atomic>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "messages/client_messages.h"

namespace dspark::testing {

class fake_server {
 public:
  using handler = std::function<std::vector<messages::server_message>(const messages::client_message&)>;

  explicit fake_server(handler h) : handler_(std::move(h)), socket_(context_, zmq::socket_type::router) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.bind("tcp://127.0.0.1:*");
    endpoint_ = socket_.get(zmq::sockopt::last_endpoint);
    thread_ = std::thread([this] { run(); });
  }
  ~fake_server() {
    stop_ = true;
    thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  std::vector<messages::client_message> received() const {
    std::lock_guard lock(m_);
    return received_;
  }

 private:
  void run() {
    while (!stop_) {
      zmq::pollitem_t item{static_cast<void*>(socket_), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::milliseconds(10));
      zmq::message_t identity, frame;
      while (socket_.recv(identity, zmq::recv_flags::dontwait)) {
        (void)socket_.recv(frame);
        auto decoded = messages::decode_client_message(frame.to_string());
        std::vector<messages::server_message> replies;
        if (!decoded.ok()) {
          replies.push_back(messages::to_error_reply(decoded.error()));
        } else {
          {
            std::lock_guard lock(m_);
            received_.push_back(decoded.value());
          }
          replies = handler_(decoded.value());
        }
        for (const auto& r : replies) {
          socket_.send(zmq::buffer(identity.to_string()), zmq::send_flags::sndmore);
          socket_.send(zmq::buffer(messages::encode(r)));
        }
      }
    }
  }

  handler handler_;
  zmq::context_t context_{1};
  zmq::socket_t socket_;
  std::string endpoint_;
  std::atomic<bool> stop_{false};
  mutable std::mutex m_;
  std::vector<messages::client_message> received_;
  std::thread thread_;
};

}  // namespace dspark::testing

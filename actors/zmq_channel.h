// One ZeroMQ socket and the I/O thread that owns it: the transport under every actor link.
//
// The endpoint string picks the transport (inproc://NAME, ipc://PATH, tcp://HOST:PORT) and
// nothing else changes: the same code path binds or connects, receives and sends for all three.
//
// Why a thread per socket: ZeroMQ sockets must stay on one thread, and a thread blocked in
// zmq::poll cannot run CAF handlers. So the channel's thread polls the socket and a wake-up
// eventfd; every inbound multipart message goes to the `on_receive` callback (which for an
// actor is one anon_send into its mailbox), and send() from any thread queues the frames and
// wakes the poller, which writes them out.
//
//        actor thread(s)                 I/O thread (owns the socket)
//        send(frames) --> [queue] --eventfd--> poll --> socket.send  ---> peer
//        mailbox  <---- on_receive(frames) <-------- poll <-- socket.recv <--- peer
//
// ROUTER sockets (frames[0] = the peer's routing id) run with router_mandatory, so a message to
// a departed peer is noticed (EHOSTUNREACH) instead of silently dropped; with
// `watch_disconnects` a socket monitor reports closed tcp/ipc connections too. Both reach
// `on_peer_lost(routing_id)`, which is how the intake cancels the requests of a client that
// went away. inproc peers have no connection events: for them only the send path notices.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

namespace dspark::actors {

using frames = std::vector<std::string>;

struct channel_options {
  zmq::socket_type type = zmq::socket_type::dealer;
  std::string endpoint;
  bool bind = false;              // bind (servers) or connect (clients)
  std::string routing_id;         // DEALER: the identity the ROUTER peer sees ("" = random)
  int64_t max_message_bytes = 64 << 20;  // hard limit; larger messages drop the connection
  bool watch_disconnects = false; // tcp/ipc socket monitor: ROUTER -> on_peer_lost, else on_link
  int send_hwm = 100000;          // messages queued per peer before it counts as lost (ROUTER)
  int close_linger_ms = 500;      // on close, how long queued messages may still be delivered
  // A bound socket with a CURVE secret key (Z85, 40 characters) accepts only CURVE clients that
  // know the matching public key; their traffic is encrypted. Empty: plain.
  std::string curve_secret_key;
  // A connecting socket with the server's CURVE public key (Z85, 40 characters) talks CURVE to
  // it, with a fresh client key pair per socket. Empty: plain.
  std::string curve_server_public_key;
};

// The Z85 public key of a Z85 CURVE secret key; throws std::runtime_error for an invalid key.
std::string curve_public_key(const std::string& secret_key);

class zmq_channel {
 public:
  using receive_fn = std::function<void(frames&&)>;
  using lost_fn = std::function<void(const std::string& routing_id)>;
  using link_fn = std::function<void(bool up)>;

  // Creates the socket on the I/O thread and binds/connects it; throws std::runtime_error naming
  // the endpoint when that fails. Nothing is received until start().
  zmq_channel(zmq::context_t& ctx, const channel_options& opt);
  // Starts the poll loop. Callbacks run on the I/O thread and must not block. Two steps, so the
  // owner (an actor) can hold the channel before the first message arrives. Call once.
  // on_link (connecting sockets with watch_disconnects, tcp/ipc): the connection to the bound
  // peer came up or went down (a restarted server is reconnected by ZeroMQ itself).
  void start(receive_fn on_receive, lost_fn on_peer_lost = {}, link_fn on_link = {});
  ~zmq_channel();  // stops the thread after writing queued frames (close_linger_ms to deliver)
  zmq_channel(const zmq_channel&) = delete;
  zmq_channel& operator=(const zmq_channel&) = delete;

  // Queues one multipart message; thread-safe, never blocks.
  void send(frames f);
  // The bound endpoint with a wildcard port resolved (tcp://127.0.0.1:*) -> the real port.
  const std::string& endpoint() const { return endpoint_; }
  // Messages the ROUTER could not deliver (peer gone or not reading).
  int64_t undeliverable() const { return undeliverable_.load(); }

 private:
  void run(zmq::context_t& ctx, std::promise<void>* ready);
  void loop(zmq::socket_t& s, zmq::socket_t& mon);
  void write_pending(zmq::socket_t& s);
  void read_all(zmq::socket_t& s);
  void read_monitor(zmq::socket_t& mon);
  void wake();

  channel_options opt_;
  receive_fn on_receive_;
  lost_fn on_peer_lost_;
  link_fn on_link_;
  std::string endpoint_;
  int wake_fd_ = -1;
  std::atomic<bool> stop_{false};
  bool started_ = false;
  std::promise<void> go_;  // start() or the destructor releases the poll loop
  std::atomic<int64_t> undeliverable_{0};
  std::mutex mu_;
  std::deque<frames> queue_;
  std::map<std::string, int> peer_fd_;  // routing id -> source fd (ZMQ_SRCFD), I/O thread only
  std::thread thread_;
};

}  // namespace dspark::actors

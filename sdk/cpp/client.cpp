// The client's I/O thread and request bookkeeping.
//
// ZeroMQ sockets are not thread-safe, so only the I/O thread touches the DEALER socket. Callers
// queue outgoing frames under a mutex and wake the thread through a pipe that zmq::poll watches
// next to the socket (libzmq 4.3 without DRAFT has no thread-safe sockets). Replies with an id
// go to that request's queue (or callback); metrics/models/health replies carry no id and are
// matched to the oldest pending call of their type (the server answers in order).
#include "sdk/cpp/dspark_client.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include <zmq.hpp>

namespace dspark::client {

struct request_state {
  std::string id;
  event_callback callback;
  mutable std::mutex m;
  std::condition_variable cv;
  std::deque<stream_event> events;
  bool ended = false;     // done or error arrived (or the client closed)
  bool consumed = false;  // next() returned the final event
};

namespace {

bool is_final(const stream_event& e) {
  return std::holds_alternative<msg::done_reply>(e) || std::holds_alternative<msg::error_reply>(e);
}

std::string describe(msg::error_code code, const std::string& message) {
  return std::string(msg::to_string(code)) + ": " + message;
}

}  // namespace

struct client::impl {
  client_options options;
  std::unique_ptr<zmq::context_t> own_context;
  zmq::context_t* context = nullptr;
  std::unique_ptr<zmq::socket_t> socket;
  int wake_pipe[2] = {-1, -1};

  std::mutex m;  // guards everything below
  std::vector<std::string> outbox;
  std::map<std::string, std::shared_ptr<request_state>> live;
  std::deque<std::promise<msg::server_message>> pending_metrics, pending_models, pending_health;
  uint64_t next_id = 0;

  std::atomic<bool> stopping{false};
  std::thread io;

  void wake() {
    const char b = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_pipe[1], &b, 1);  // a full pipe already wakes it
  }

  void enqueue(std::string frame) {
    {
      std::lock_guard lock(m);
      outbox.push_back(std::move(frame));
    }
    wake();
  }

  static void deliver(request_state& r, stream_event e) {
    if (r.callback) {
      // Mark the end before the callback runs: whoever the final callback wakes must already
      // see finished().
      {
        std::lock_guard lock(r.m);
        r.ended = r.ended || is_final(e);
        r.consumed = r.ended;
      }
      r.callback(e);
      std::lock_guard lock(r.m);
      r.cv.notify_all();
      return;
    }
    std::lock_guard lock(r.m);
    r.ended = r.ended || is_final(e);
    r.events.push_back(std::move(e));
    r.cv.notify_all();
  }

  void dispatch(const std::string& frame) {
    auto decoded = msg::decode_server_message(frame, SIZE_MAX);
    if (!decoded.ok()) return;  // a reply we cannot read cannot be attributed either
    msg::server_message& message = decoded.value();
    auto answer = [&](std::deque<std::promise<msg::server_message>>& queue) {
      std::unique_lock lock(m);
      if (queue.empty()) return;
      auto p = std::move(queue.front());
      queue.pop_front();
      lock.unlock();
      p.set_value(std::move(message));
    };
    if (std::holds_alternative<msg::metrics_reply>(message)) return answer(pending_metrics);
    if (std::holds_alternative<msg::models_reply>(message)) return answer(pending_models);
    if (std::holds_alternative<msg::health_reply>(message)) return answer(pending_health);

    std::string id;
    stream_event event;
    if (auto* a = std::get_if<msg::accepted_reply>(&message)) id = a->id, event = std::move(*a);
    else if (auto* t = std::get_if<msg::tokens_reply>(&message)) id = t->id, event = std::move(*t);
    else if (auto* d = std::get_if<msg::done_reply>(&message)) id = d->id, event = std::move(*d);
    else if (auto* e = std::get_if<msg::error_reply>(&message); e && e->id) id = *e->id, event = std::move(*e);
    else return;  // an unattributed error: the server could not read one of our frames
    std::shared_ptr<request_state> r;
    {
      std::lock_guard lock(m);
      auto it = live.find(id);
      if (it == live.end()) return;  // a late reply for a request already ended
      r = it->second;
      if (is_final(event)) live.erase(it);
    }
    deliver(*r, std::move(event));
  }

  void run() {
    std::vector<std::string> sending;
    while (!stopping.load()) {
      zmq::pollitem_t items[] = {{static_cast<void*>(*socket), 0, ZMQ_POLLIN, 0}, {nullptr, wake_pipe[0], ZMQ_POLLIN, 0}};
      // A frame that could not be sent yet (no peer connected) is retried every 20 ms.
      zmq::poll(items, 2, std::chrono::milliseconds(sending.empty() ? -1 : 20));
      if (items[1].revents & ZMQ_POLLIN) {
        char buf[256];
        while (::read(wake_pipe[0], buf, sizeof buf) > 0) {
        }
      }
      {
        std::lock_guard lock(m);
        for (auto& f : outbox) sending.push_back(std::move(f));
        outbox.clear();
      }
      size_t sent = 0;
      for (; sent < sending.size(); ++sent)
        if (!socket->send(zmq::buffer(sending[sent]), zmq::send_flags::dontwait)) break;
      sending.erase(sending.begin(), sending.begin() + static_cast<std::ptrdiff_t>(sent));
      zmq::message_t frame;
      while (socket->recv(frame, zmq::recv_flags::dontwait)) dispatch(frame.to_string());
    }
  }

  template <class Reply>
  Reply control(std::deque<std::promise<msg::server_message>>& queue, const msg::client_message& request,
                const char* what) {
    std::future<msg::server_message> f;
    {
      std::lock_guard lock(m);
      queue.emplace_back();
      f = queue.back().get_future();
    }
    enqueue(msg::encode(request));
    if (f.wait_for(options.timeout) != std::future_status::ready)
      throw client_error(error_kind::timeout, msg::error_code::internal,
                         std::string("no ") + what + " reply from " + options.endpoint + " within " +
                             std::to_string(options.timeout.count()) + " ms (is the server running?)");
    return std::get<Reply>(f.get());
  }
};

msg::prompt_input chat(std::string user_message, std::string system_message) {
  msg::chat_prompt c;
  if (!system_message.empty()) c.messages.push_back({"system", std::move(system_message)});
  c.messages.push_back({"user", std::move(user_message)});
  return c;
}

msg::prompt_input text(std::string prompt) { return msg::text_prompt{std::move(prompt)}; }

client::client(client_options options) : impl_(std::make_unique<impl>()) {
  impl& s = *impl_;
  s.options = std::move(options);
  if (s.options.context) {
    s.context = s.options.context;
  } else {
    s.own_context = std::make_unique<zmq::context_t>(1);
    s.context = s.own_context.get();
  }
  s.socket = std::make_unique<zmq::socket_t>(*s.context, zmq::socket_type::dealer);
  s.socket->set(zmq::sockopt::linger, 0);
  if (!s.options.server_public_key.empty()) {
    char pub[41], sec[41];
    if (zmq_curve_keypair(pub, sec) != 0)
      throw client_error(error_kind::invalid, msg::error_code::internal, "CURVE is not available in this libzmq");
    s.socket->set(zmq::sockopt::curve_serverkey, s.options.server_public_key);
    s.socket->set(zmq::sockopt::curve_publickey, std::string(pub));
    s.socket->set(zmq::sockopt::curve_secretkey, std::string(sec));
  }
  try {
    s.socket->connect(s.options.endpoint);
  } catch (const zmq::error_t& e) {
    throw client_error(error_kind::invalid, msg::error_code::bad_request,
                       "cannot connect to '" + s.options.endpoint + "': " + e.what());
  }
  if (::pipe2(s.wake_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
    throw client_error(error_kind::invalid, msg::error_code::internal, "cannot create the wake-up pipe");
  s.io = std::thread([&s] { s.run(); });
}

client::~client() {
  impl& s = *impl_;
  s.stopping = true;
  s.wake();
  s.io.join();
  std::map<std::string, std::shared_ptr<request_state>> live;
  {
    std::lock_guard lock(s.m);
    live.swap(s.live);
  }
  for (auto& [id, r] : live) impl::deliver(*r, msg::error_reply{id, msg::error_code::internal, "client closed"});
  s.socket.reset();
  ::close(s.wake_pipe[0]);
  ::close(s.wake_pipe[1]);
}

const client_options& client::options() const { return impl_->options; }

request client::submit(msg::prompt_input input, msg::sampling_params params, bool stream, event_callback callback,
                       std::string id) {
  impl& s = *impl_;
  if (auto err = msg::validate_params(params))
    throw client_error(error_kind::invalid, err->code, describe(err->code, err->message));
  auto state = std::make_shared<request_state>();
  {
    std::lock_guard lock(s.m);
    if (id.empty()) id = "r" + std::to_string(s.next_id++);
    if (s.live.count(id))
      throw client_error(error_kind::invalid, msg::error_code::duplicate_id, "request id '" + id + "' is live");
  }
  std::string frame = msg::encode(msg::submit_request{id, std::move(input), std::move(params), stream});
  // The frame is checked here because the server refuses an oversized one without reading its id.
  if (frame.size() > s.options.max_message_bytes)
    throw client_error(error_kind::invalid, msg::error_code::too_large,
                       "request of " + std::to_string(frame.size()) + " bytes exceeds max_message_bytes " +
                           std::to_string(s.options.max_message_bytes));
  state->id = id;
  state->callback = std::move(callback);
  {
    std::lock_guard lock(s.m);
    s.live.emplace(id, state);
  }
  s.enqueue(std::move(frame));
  return request(state, this);
}

void client::send_cancel(const std::string& id) { impl_->enqueue(msg::encode(msg::cancel_request{id})); }

std::string client::metrics() {
  return impl_->control<msg::metrics_reply>(impl_->pending_metrics, msg::metrics_request{}, "metrics").text;
}
msg::models_reply client::models() {
  return impl_->control<msg::models_reply>(impl_->pending_models, msg::models_request{}, "models");
}
msg::health_reply client::health() {
  return impl_->control<msg::health_reply>(impl_->pending_health, msg::health_request{}, "health");
}

// ---- request ------------------------------------------------------------------------------

request::request(std::shared_ptr<request_state> state, client* owner) : state_(std::move(state)), owner_(owner) {}
request::request(request&&) noexcept = default;
request& request::operator=(request&& other) noexcept {
  if (this != &other) {
    if (state_ && !finished()) cancel();
    state_ = std::move(other.state_);
    owner_ = other.owner_;
  }
  return *this;
}
request::~request() {
  if (state_ && !finished()) cancel();
}

const std::string& request::id() const { return state_->id; }

bool request::finished() const {
  std::lock_guard lock(state_->m);
  return state_->ended;
}

void request::cancel() {
  if (!finished()) owner_->send_cancel(state_->id);
}

std::optional<stream_event> request::try_next(std::chrono::milliseconds wait) {
  request_state& r = *state_;
  std::unique_lock lock(r.m);
  if (r.consumed) throw client_error(error_kind::closed, msg::error_code::unknown_id, "request '" + r.id + "' has ended");
  if (!r.cv.wait_for(lock, wait, [&] { return !r.events.empty(); })) return std::nullopt;
  stream_event e = std::move(r.events.front());
  r.events.pop_front();
  if (is_final(e)) r.consumed = true;
  return e;
}

stream_event request::next() {
  const auto timeout = owner_->options().timeout;
  if (auto e = try_next(timeout)) return std::move(*e);
  throw client_error(error_kind::timeout, msg::error_code::internal,
                     "no reply for request '" + id() + "' within " + std::to_string(timeout.count()) +
                         " ms (is the server at " + owner_->options().endpoint + " running?)");
}

msg::done_reply request::wait() {
  for (;;) {
    stream_event e = next();
    if (auto* d = std::get_if<msg::done_reply>(&e)) return std::move(*d);
    if (auto* err = std::get_if<msg::error_reply>(&e))
      throw client_error(error_kind::server, err->code, describe(err->code, err->message));
  }
}

}  // namespace dspark::client

// HTTP routes of the gateway. Each HTTP worker thread serves one connection; requests go to
// the server through one shared SDK client (thread-safe), control calls (health, models,
// metrics) through a second one with a short timeout so a dead server is reported quickly.
//
// Streaming: the first server event is awaited before the response starts, so a refusal
// (overloaded -> 429, invalid -> 400) is a real HTTP status. Then events become SSE chunks. A
// client that goes away makes a write fail; the provider returns false, the response (and the
// SDK request it owns) is destroyed, and the request's destructor cancels it on the server.
// While no token arrives, a comment line is written every second to notice that sooner.
#include "services/gateway/gateway.h"

#include <httplib.h>

#include <cstdio>
#include <ctime>
#include <memory>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "sdk/cpp/dspark_client.h"
#include "services/gateway/gateway_metrics.h"
#include "services/gateway/openai_mapping.h"

namespace dspark::gateway {

namespace {

namespace dm = dspark::messages;
namespace dc = dspark::client;
using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

void send_error(httplib::Response& res, const api_error& e) {
  res.status = e.status;
  res.set_content(error_body(e), "application/json");
}

api_error error_from_client(const dc::client_error& e) {
  switch (e.kind) {
    case dc::error_kind::timeout: return {504, e.what(), "server_error", "", "timeout"};
    case dc::error_kind::closed: return {503, e.what(), "server_error", "", "closed"};
    default: return error_from_protocol(e.code, e.what());
  }
}

// Compares without an early exit, so the time taken does not reveal how much of a key matched.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ (i < b.size() ? b[i] : 0));
  return diff == 0;
}

// Everything one streaming response needs after its handler returned.
struct stream_state {
  dc::request request;
  response_meta meta;
  bool include_usage = false;
  bool sent_text = false;
  clock_type::time_point start;
  gateway_metrics* metrics;
  std::string endpoint;
  stream_state(dc::request r, gateway_metrics* m) : request(std::move(r)), metrics(m) { metrics->stream_opened(); }
  ~stream_state() { metrics->stream_closed(); }
};

class gateway_service {
 public:
  explicit gateway_service(const gateway_options& o)
      : options_(o), client_(client_options(o, o.server_timeout)),
        control_(client_options(o, std::min<std::chrono::milliseconds>(o.server_timeout, std::chrono::seconds(5)))) {}

  void install(httplib::Server& svr) {
    svr.set_payload_max_length(options_.max_body_bytes);
    svr.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (options_.api_key.empty() || req.path == "/health") return httplib::Server::HandlerResponse::Unhandled;
      if (same_secret(req.get_header_value("Authorization"), "Bearer " + options_.api_key))
        return httplib::Server::HandlerResponse::Unhandled;
      send_error(res, {401, "missing or invalid API key (Authorization: Bearer KEY)", "invalid_request_error", "",
                       "invalid_api_key"});
      metrics_.record_request(req.path, 401, 0);
      return httplib::Server::HandlerResponse::Handled;
    });
    svr.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
      if (!res.body.empty()) return;  // a handler's own error body
      if (res.status == 413)
        send_error(res, {413, "request body exceeds " + std::to_string(options_.max_body_bytes) + " bytes",
                         "invalid_request_error", "", "too_large"});
      else if (res.status == 404)
        send_error(res, {404, "no route " + req.method + " " + req.path, "invalid_request_error", "", "not_found"});
      else
        send_error(res, {res.status, "HTTP error " + std::to_string(res.status), "invalid_request_error", "", ""});
    });
    svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
      std::string what = "internal error";
      try {
        std::rethrow_exception(ep);
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      send_error(res, {500, what, "server_error", "", "internal"});
    });
    svr.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
      complete(req, res, api_kind::chat, "/v1/chat/completions");
    });
    svr.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
      complete(req, res, api_kind::completions, "/v1/completions");
    });
    svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) { list_models(res); });
    svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) { health(res); });
    svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) { metrics(res); });
  }

 private:
  static dc::client_options client_options(const gateway_options& o, std::chrono::milliseconds timeout) {
    dc::client_options c;
    c.endpoint = o.server_endpoint;
    c.server_public_key = o.server_public_key;
    c.context = o.context;
    c.timeout = timeout;
    return c;
  }

  // The name clients see: --model-name, else the server's first model (asked once).
  std::string model_name() {
    std::lock_guard lock(model_m_);
    if (!options_.model_name.empty()) return options_.model_name;
    if (server_model_.empty()) {
      try {
        auto m = control_.models();
        if (!m.models.empty()) server_model_ = m.models.front().id;
      } catch (const dc::client_error&) {
        return "dspark";  // asked again next time
      }
    }
    return server_model_.empty() ? "dspark" : server_model_;
  }

  void complete(const httplib::Request& req, httplib::Response& res, api_kind kind, const std::string& endpoint) {
    const auto t0 = clock_type::now();
    auto finish = [&](int status) { metrics_.record_request(endpoint, status, seconds_since(t0)); };
    auto parsed = parse_openai_request(req.body, kind);
    if (auto* e = std::get_if<api_error>(&parsed)) {
      send_error(res, *e);
      return finish(e->status);
    }
    auto& r = std::get<openai_request>(parsed);
    response_meta meta{kind, std::string(kind == api_kind::chat ? "chatcmpl-" : "cmpl-") + std::to_string(++next_id_),
                       model_name(), static_cast<int64_t>(std::time(nullptr))};
    try {
      dc::request request = client_.submit(std::move(r.input), r.params, r.stream);
      if (!r.stream) {
        dm::done_reply done = request.wait();
        res.set_content(completion_body(meta, done), "application/json");
        return finish(200);
      }
      // Wait for the server's first answer so a refusal is an HTTP status, not a broken stream.
      dc::stream_event first = request.next();
      if (auto* e = std::get_if<dm::error_reply>(&first)) {
        api_error err = error_from_protocol(e->code, e->message);
        send_error(res, err);
        return finish(err.status);
      }
      auto state = std::make_shared<stream_state>(std::move(request), &metrics_);
      state->meta = std::move(meta);
      state->include_usage = r.include_usage;
      state->start = t0;
      state->endpoint = endpoint;
      handle_stream_event(*state, first, nullptr);  // `accepted` writes nothing
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider("text/event-stream", [this, state](size_t, httplib::DataSink& sink) {
        return pump_stream(*state, sink);
      });
    } catch (const dc::client_error& e) {
      api_error err = error_from_client(e);
      send_error(res, err);
      finish(err.status);
    }
  }

  // Writes the chunks for one event; true when the stream has ended.
  bool handle_stream_event(stream_state& s, const dc::stream_event& ev, httplib::DataSink* sink) {
    auto write = [&](const std::string& chunk) { return sink->write(chunk.data(), chunk.size()); };
    if (auto* t = std::get_if<dm::tokens_reply>(&ev)) {
      if (t->text.empty()) return false;  // an incomplete character: wait for the rest
      if (!s.sent_text) {
        metrics_.record_ttft(seconds_since(s.start));
        if (s.meta.kind == api_kind::chat && !write(sse_role_chunk(s.meta))) throw std::runtime_error("client gone");
        s.sent_text = true;
      }
      if (!write(sse_text_chunk(s.meta, t->text))) throw std::runtime_error("client gone");
      return false;
    }
    if (auto* d = std::get_if<dm::done_reply>(&ev)) {
      if (!s.sent_text && s.meta.kind == api_kind::chat) write(sse_role_chunk(s.meta));
      write(sse_finish_chunk(s.meta, d->reason));
      if (s.include_usage) write(sse_usage_chunk(s.meta, d->stats));
      write(std::string(k_sse_done));
      metrics_.record_request(s.endpoint, 200, seconds_since(s.start));
      return true;
    }
    if (auto* e = std::get_if<dm::error_reply>(&ev)) {
      write(sse_error_chunk(error_from_protocol(e->code, e->message)));
      write(std::string(k_sse_done));
      metrics_.record_request(s.endpoint, 200, seconds_since(s.start));
      return true;
    }
    return false;  // accepted
  }

  // The chunked-content provider: streams until the end; false aborts (client gone, timeout).
  bool pump_stream(stream_state& s, httplib::DataSink& sink) {
    try {
      auto last_event = clock_type::now();
      for (;;) {
        std::optional<dc::stream_event> ev = s.request.try_next(std::chrono::seconds(1));
        if (!ev) {
          if (clock_type::now() - last_event > options_.server_timeout) {
            const std::string chunk = sse_error_chunk({504, "no reply from the server within the timeout",
                                                       "server_error", "", "timeout"});
            sink.write(chunk.data(), chunk.size());
            sink.done();
            return true;
          }
          static const std::string k_keepalive = ": keep-alive\n\n";
          if (!sink.write(k_keepalive.data(), k_keepalive.size())) return false;
          continue;
        }
        last_event = clock_type::now();
        if (handle_stream_event(s, *ev, &sink)) {
          sink.done();
          return true;
        }
      }
    } catch (const std::exception&) {
      metrics_.record_request(s.endpoint, 499, seconds_since(s.start));  // client closed the connection
      return false;  // the state is released; its request's destructor cancels it on the server
    }
  }

  void list_models(httplib::Response& res) {
    const auto t0 = clock_type::now();
    try {
      auto m = control_.models();
      json data = json::array();
      for (const auto& info : m.models) {
        const std::string id = options_.model_name.empty() ? info.id : options_.model_name;
        data.push_back({{"id", id}, {"object", "model"}, {"created", 0}, {"owned_by", "dspark"},
                        {"context_length", info.n_ctx}, {"draft", info.draft}});
      }
      res.set_content(json{{"object", "list"}, {"data", data}}.dump(), "application/json");
      metrics_.record_request("/v1/models", 200, seconds_since(t0));
    } catch (const dc::client_error& e) {
      api_error err = error_from_client(e);
      send_error(res, err);
      metrics_.record_request("/v1/models", err.status, seconds_since(t0));
    }
  }

  void health(httplib::Response& res) {
    try {
      auto h = control_.health();
      res.status = h.status == dm::health_status::ok ? 200 : 503;
      res.set_content(json{{"status", dm::to_string(h.status)},
                           {"active_requests", h.active_requests},
                           {"queued_requests", h.queued_requests}}.dump(),
                      "application/json");
    } catch (const dc::client_error& e) {
      res.status = 503;
      res.set_content(json{{"status", "unavailable"}, {"error", e.what()}}.dump(), "application/json");
    }
    metrics_.record_request("/health", res.status, 0);
  }

  void metrics(httplib::Response& res) {
    std::string text;
    try {
      text = control_.metrics();
      if (!text.empty() && text.back() != '\n') text += '\n';
      text += "# TYPE dspark_gateway_server_up gauge\ndspark_gateway_server_up 1\n";
    } catch (const dc::client_error&) {
      text = "# TYPE dspark_gateway_server_up gauge\ndspark_gateway_server_up 0\n";
    }
    metrics_.record_request("/metrics", 200, 0);
    res.set_content(text + metrics_.prometheus_text(), "text/plain; version=0.0.4");
  }

  gateway_options options_;
  dc::client client_;
  dc::client control_;
  gateway_metrics metrics_;
  std::atomic<uint64_t> next_id_{0};
  std::mutex model_m_;
  std::string server_model_;
};

}  // namespace

int run_gateway(const gateway_options& options, std::atomic<bool>& stop) {
  std::unique_ptr<gateway_service> service;
  try {
    service = std::make_unique<gateway_service>(options);
  } catch (const dc::client_error& e) {
    std::fprintf(stderr, "gateway: %s\n", e.what());
    return 1;
  }
  httplib::Server svr;
  const size_t threads = options.max_connections;
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  service->install(svr);
  int port = options.port;
  if (port == 0) port = svr.bind_to_any_port(options.host);
  else if (!svr.bind_to_port(options.host, port)) port = -1;
  if (port <= 0) {
    std::fprintf(stderr, "gateway: cannot listen on %s:%d\n", options.host.c_str(), options.port);
    return 1;
  }
  if (options.on_listening) options.on_listening(port);
  // stop() only acts on a running server, so it is repeated until listen_after_bind returns.
  std::atomic<bool> listen_ended{false};
  std::thread watcher([&] {
    while (!listen_ended.load()) {
      if (stop.load()) svr.stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  svr.listen_after_bind();
  listen_ended = true;
  watcher.join();
  return 0;
}

}  // namespace dspark::gateway

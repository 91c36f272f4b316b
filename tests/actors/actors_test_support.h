// Helpers for the actor tests: a raw DEALER client speaking docs/protocol.md through the client
// codec, the CPU factories a test server uses, and the offline reference (engine generate()).
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <zmq.hpp>

#include "actors/server.h"
#include "config/server_config.h"
#include "engine/cpu_backend.h"
#include "engine/generator.h"
#include "engine/model.h"
#include "messages/client_messages.h"
#include "models/drafters/layerskip_drafter.h"
#include "models/drafters/ngram_drafter.h"
#include "models/tokenizer/tokenizer.h"

namespace dspark::test {

namespace cm = dspark::messages;

// CPU target backends and drafters as the CLI builds them (2 threads: the CI box has 2 cores).
inline actors::server_factories cpu_factories() {
  actors::server_factories f;
  f.make_backend = [](const model& m, const config::server_config& c) -> std::unique_ptr<backend> {
    cpu_backend_options o;
    o.n_threads = 2;
    o.n_seq_max = c.max_requests;
    o.n_ctx = c.n_ctx;
    o.kv_block_size = c.kv_block_size;
    o.kv_blocks = c.kv_blocks;
    return std::make_unique<cpu_backend>(m.config(), m.weights(), o);
  };
  f.make_drafter = [](const model& m, const config::server_config& c) -> std::unique_ptr<drafter> {
    if (c.draft == "ngram") {
      ngram_drafter_params p;
      p.max_slots = c.max_requests;
      return std::make_unique<ngram_drafter>(p);
    }
    layerskip_drafter_params p;
    p.n_layers = std::stoi(c.draft.substr(std::string("layerskip:").size()));
    p.max_slots = c.max_requests;
    const int32_t slots = c.max_requests, n_ctx = c.n_ctx;
    return std::make_unique<layerskip_drafter>(m.config(), m.weights(), p,
                                               [slots, n_ctx](const model_config& mc, const llama_weights& w) {
                                                 cpu_backend_options o;
                                                 o.n_threads = 2;
                                                 o.n_seq_max = slots;
                                                 o.n_ctx = n_ctx;
                                                 return std::make_unique<cpu_backend>(mc, w, o);
                                               });
  };
  return f;
}

inline config::server_config test_config(const std::string& model_path) {
  config::server_config c;
  c.model = model_path;
  c.n_ctx = 512;
  c.max_requests = 4;
  // Generous: ctest runs binaries in parallel on 2 cores, and a missed deadline only costs a
  // plain step (outputs never depend on it), but tests that count proposals want the drafter kept.
  c.drafter_timeout_ms = 2000;
  c.client_endpoint = "tcp://127.0.0.1:*";
  c.engine_endpoint = "inproc://test-engine-" + std::to_string(::getpid()) + "-" + std::to_string(std::rand());
  c.drafter_endpoint = "inproc://test-drafter-" + std::to_string(::getpid()) + "-" + std::to_string(std::rand());
  return c;
}

// A DEALER client: one request id space, replies decoded with the client codec.
class raw_client {
 public:
  raw_client(zmq::context_t& ctx, const std::string& endpoint) : s_(ctx, zmq::socket_type::dealer) {
    s_.set(zmq::sockopt::linger, 0);
    s_.connect(endpoint);
  }
  void send_raw(const std::string& frame) { s_.send(zmq::buffer(frame), zmq::send_flags::none); }
  void send(const cm::client_message& m) { send_raw(cm::encode(m)); }
  // The next reply, or nullopt after `timeout`.
  std::optional<cm::server_message> recv(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
    zmq::pollitem_t it{s_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&it, 1, timeout) <= 0) return std::nullopt;
    zmq::message_t m;
    if (!s_.recv(m)) return std::nullopt;
    auto r = cm::decode_server_message(m.to_string_view(), size_t{64} << 20);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
    if (!r.ok()) return std::nullopt;
    return r.value();
  }
  zmq::socket_t& socket() { return s_; }

 private:
  zmq::socket_t s_;
};

// Everything one request produced.
struct request_log {
  bool accepted = false;
  std::vector<int32_t> streamed_ids;
  std::string streamed_text;
  std::optional<cm::done_reply> done;
  std::optional<cm::error_reply> error;
  bool ended() const { return done || error; }
};

// Reads replies until every id in `logs` ended (or a reply is late by `timeout`: test failure).
inline void collect(raw_client& c, std::map<std::string, request_log>& logs,
                    std::chrono::milliseconds timeout = std::chrono::seconds(120)) {
  auto open = [&] {
    for (auto& [id, l] : logs)
      if (!l.ended()) return true;
    return false;
  };
  while (open()) {
    auto r = c.recv(timeout);
    ASSERT_TRUE(r.has_value()) << "no reply within the timeout";
    if (auto* a = std::get_if<cm::accepted_reply>(&*r)) logs[a->id].accepted = true;
    else if (auto* t = std::get_if<cm::tokens_reply>(&*r)) {
      auto& l = logs[t->id];
      l.streamed_ids.insert(l.streamed_ids.end(), t->token_ids.begin(), t->token_ids.end());
      l.streamed_text += t->text;
    } else if (auto* d = std::get_if<cm::done_reply>(&*r)) logs[d->id].done = *d;
    else if (auto* e = std::get_if<cm::error_reply>(&*r)) {
      ASSERT_TRUE(e->id.has_value()) << "unattributed error: " << e->message;
      logs[*e->id].error = *e;
    }
  }
}

inline cm::submit_request submit_text(const std::string& id, const std::string& prompt, int max_tokens,
                                      bool stream = true) {
  cm::submit_request s;
  s.id = id;
  s.input = cm::text_prompt{prompt};
  s.params.max_tokens = max_tokens;
  s.params.temperature = 0;
  s.stream = stream;
  return s;
}

// The offline reference: engine generate() on a fresh CPU backend, same prompt encoding as the
// intake's raw-text path.
inline generation_result offline(const model& m, const std::string& prompt, const sampling_params& p) {
  cpu_backend_options o;
  o.n_threads = 2;
  o.n_ctx = 512;
  cpu_backend be(m.config(), m.weights(), o);
  return generate(m, be, m.tokenizer().encode(prompt, true, true), p);
}
inline generation_result offline(const model& m, const std::string& prompt, int max_tokens) {
  sampling_params p;
  p.max_tokens = max_tokens;
  return offline(m, prompt, p);
}

}  // namespace dspark::test

// The intake's behaviour without the actor around it: the client protocol (docs/protocol.md)
// on one side, the engine messages to the verifier on the other. intake_actor.cpp wraps it.
//
// Per client frame [client routing id][json]:
//   too large -> error too_large; undecodable -> error bad_request/invalid_params (the
//   server keeps serving); submit -> admission (draining or max_queued live requests ->
//   overloaded; duplicate live id -> duplicate_id), tokenization (raw text, chat template or
//   token ids), `accepted`, then submit_request to the verifier under a fresh 64-bit key;
//   cancel -> cancel_request (the verifier answers with done/cancelled); metrics/health ->
//   a status_query whose report becomes the reply; models -> answered here.
// Per verifier frame: token_delta -> `tokens` (stream only), request_done -> `done`,
// request_rejected -> `error`; the request's state is freed on done/error.
// A client that went away (on_client_lost) has its live requests cancelled; their replies are
// dropped when they arrive, and their KV is freed by the verifier's cancel.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "actors/zmq_channel.h"
#include "messages/client_messages.h"
#include "messages/engine_messages.h"
#include "models/tokenizer/chat_template.h"

namespace dspark {
class tokenizer;
}

namespace dspark::actors {

struct intake_options {
  std::string model_id;       // the name `models` reports
  std::string draft;          // the configured drafter kind ("" = none)
  int32_t n_ctx = 0;          // the verifier's context (prompts must be shorter)
  size_t max_message_bytes = messages::k_default_max_message_bytes;
  int32_t max_queued = 256;   // live requests (accepted, not yet done) before `overloaded`
};

class intake_core {
 public:
  using send_fn = std::function<void(frames)>;

  // tok must outlive the core (null: only prompt_tokens submits are accepted).
  intake_core(const tokenizer* tok, const intake_options& opt, send_fn to_client, send_fn to_engine);

  void on_client(frames&& f);
  void on_engine(frames&& f);
  void on_client_lost(const std::string& client);
  // The verifier connection dropped (it died or restarted): every live request ends now with
  // error `internal`, so no client waits forever; new submits go to the verifier once ZeroMQ
  // has reconnected.
  void on_engine_lost();
  // Stops admitting: submits get `overloaded` ("draining"), health says draining.
  void begin_drain() { draining_ = true; }
  bool draining() const { return draining_; }
  int32_t live() const { return static_cast<int32_t>(reqs_.size()); }

 private:
  struct live_request {
    std::string client;   // routing id
    std::string id;       // the client's request id
    bool stream = true;
    bool orphan = false;  // the client is gone: drop replies
  };
  struct pending_query {
    std::string client;
    bool metrics = false;  // else health
  };

  void reply(const std::string& client, const messages::server_message& m);
  void error(const std::string& client, std::optional<std::string> id, messages::error_code c, std::string why);
  void submit(const std::string& client, messages::submit_request&& s);
  void cancel(const std::string& client, const std::string& id);
  void query(const std::string& client, bool metrics);
  void to_engine();  // sends buf_
  std::optional<std::vector<int32_t>> tokenize(const std::string& client, const messages::submit_request& s);
  void finish(uint64_t key, const msg::request_done& d);
  std::string metrics_text(const msg::status_report& s) const;

  const tokenizer* tok_;
  std::optional<chat_template> tmpl_;
  intake_options opt_;
  send_fn to_client_;
  send_fn to_engine_;
  bool draining_ = false;
  uint64_t next_key_ = 1;
  uint64_t next_seed_ = 0x5eed;
  uint64_t next_cookie_ = 1;
  std::unordered_map<uint64_t, live_request> reqs_;
  std::map<std::pair<std::string, std::string>, uint64_t> by_client_id_;
  std::unordered_map<uint64_t, pending_query> queries_;
  std::string buf_;
  // Counters for /metrics.
  int64_t n_done_ = 0, n_cancelled_ = 0, n_error_ = 0, n_overloaded_ = 0, n_bad_ = 0;
  double ttft_sum_ = 0, tpot_sum_ = 0, accept_sum_ = 0;
  int64_t tpot_count_ = 0, completion_tokens_ = 0, prompt_tokens_ = 0;
};

}  // namespace dspark::actors

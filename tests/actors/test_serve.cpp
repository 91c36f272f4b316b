// `dspark serve` in one process (actors::server, every role, links over inproc, clients over
// tcp on loopback): concurrent requests equal offline generate() token for token at
// temperature 0, streams concatenate to the final text, cancel and client disconnect free every
// KV block, the queue limit answers overloaded, malformed frames get errors while the server
// keeps serving, drain finishes in-flight requests, and requests sharing a prompt prefix reuse
// its cached KV blocks.
#include <cstdio>
#include <filesystem>
#include <sstream>
#include <thread>

#include "actors_test_support.h"
#include "messages/drafter_messages.h"
#include "tests/test_support.h"

namespace dspark::test {
namespace {

// A value from the Prometheus text: the first sample line starting with `name` (which may
// include labels), or -1e9 when absent.
double metric(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name, 0) != 0 || line.size() <= name.size()) continue;
    const char next = line[name.size()];
    if (next != ' ' && next != '{') continue;
    return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return -1e9;
}

std::string metrics_text(raw_client& c) {
  c.send(cm::metrics_request{});
  for (;;) {
    auto r = c.recv();
    if (!r) return "";
    if (auto* m = std::get_if<cm::metrics_reply>(&*r)) return m->text;
  }
}

// Polls metrics until no request is live or the deadline passes; returns the last text.
std::string wait_idle(raw_client& c, std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  std::string t;
  do {
    t = metrics_text(c);
    if (metric(t, "dspark_live_requests") == 0 && metric(t, "dspark_active_requests") == 0) return t;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  } while (std::chrono::steady_clock::now() < end);
  return t;
}

const char* k_prompts[] = {
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
};

// Submits k_prompts as r0..r2 at once (r2 streamed only with stream_last) and collects them.
std::map<std::string, request_log> run_prompts(raw_client& c, int max_tokens, bool stream_last) {
  std::map<std::string, request_log> logs;
  for (int i = 0; i < 3; ++i) {
    c.send(submit_text(std::string("r") + std::to_string(i), k_prompts[i], max_tokens, /*stream=*/i != 2 || stream_last));
    logs[std::string("r") + std::to_string(i)];
  }
  collect(c, logs);
  return logs;
}

class ServeTest : public ::testing::Test {
 protected:
  void start(config::server_config cfg, bool drafter = true) {
    actors::server_roles roles;
    roles.drafter = drafter;
    srv_ = std::make_unique<actors::server>(cfg, roles, cpu_factories());
  }
  zmq::context_t ctx_{1};
  std::unique_ptr<actors::server> srv_;
};

TEST_F(ServeTest, ConcurrentRequestsEqualOfflineGenerate) {
  DSPARK_REQUIRE_MODEL(path);
  auto cfg = test_config(path);
  cfg.draft = "ngram";
  start(cfg);
  raw_client c(ctx_, srv_->client_endpoint());
  const int max_tokens = 12;
  std::map<std::string, request_log> logs = run_prompts(c, max_tokens, /*stream_last=*/false);
  const model& m = srv_->loaded_model();
  for (int i = 0; i < 3; ++i) {
    const request_log& l = logs[std::string("r") + std::to_string(i)];
    ASSERT_TRUE(l.done) << "request " << i << " failed: " << (l.error ? l.error->message : "");
    EXPECT_TRUE(l.accepted);
    const generation_result ref = offline(m, k_prompts[i], max_tokens);
    EXPECT_EQ(l.done->token_ids, ref.token_ids) << "request " << i;
    EXPECT_EQ(l.done->text, ref.text) << "request " << i;
    EXPECT_EQ(l.done->stats.completion_tokens, static_cast<int64_t>(ref.token_ids.size()));
    if (i != 2) {
      EXPECT_EQ(l.streamed_ids, l.done->token_ids) << "request " << i;
      EXPECT_EQ(l.streamed_text, l.done->text) << "request " << i;
    } else {
      EXPECT_TRUE(l.streamed_ids.empty()) << "stream:false got tokens";
    }
  }
  // models and health answer too.
  c.send(cm::models_request{});
  auto mr = c.recv();
  ASSERT_TRUE(mr && std::holds_alternative<cm::models_reply>(*mr));
  EXPECT_EQ(std::get<cm::models_reply>(*mr).models.at(0).draft, "ngram");
  c.send(cm::health_request{});
  auto hr = c.recv();
  ASSERT_TRUE(hr && std::holds_alternative<cm::health_reply>(*hr));
  EXPECT_EQ(std::get<cm::health_reply>(*hr).status, cm::health_status::ok);
}

// The speculation gate in the server (`dspark serve --spec-gate 1`, docs/scheduler.md): a lone
// request drafts (one decoding request is within the limit); four concurrent ones exceed it,
// so the drafting ones are detached and later ones join plain. Every output equals offline
// generate() token for token, and the KV comes back to the idle baseline.
TEST_F(ServeTest, SpecGateBatchLimitEqualsOffline) {
  DSPARK_REQUIRE_MODEL(path);
  auto cfg = test_config(path);
  cfg.draft = "ngram";
  cfg.spec_gate = "1";
  start(cfg);
  raw_client c(ctx_, srv_->client_endpoint());
  const double free0 = metric(metrics_text(c), "dspark_backend_kv_free_blocks");
  const model& m = srv_->loaded_model();
  const int max_tokens = 24;
  std::map<std::string, request_log> lone{{"lone", {}}};
  c.send(submit_text("lone", k_prompts[0], max_tokens));
  collect(c, lone);
  ASSERT_TRUE(lone["lone"].done);
  EXPECT_EQ(lone["lone"].done->token_ids, offline(m, k_prompts[0], max_tokens).token_ids);
  EXPECT_GT(lone["lone"].done->stats.draft_tokens_proposed, 0) << "alone, the request drafts";

  const char* prompts[] = {k_prompts[0], k_prompts[1], k_prompts[2], "List three primary colors:"};
  std::map<std::string, request_log> logs;
  for (int i = 0; i < 4; ++i) {
    c.send(submit_text("p" + std::to_string(i), prompts[i], max_tokens));
    logs["p" + std::to_string(i)];
  }
  collect(c, logs);
  for (int i = 0; i < 4; ++i) {
    const request_log& l = logs["p" + std::to_string(i)];
    ASSERT_TRUE(l.done) << "request " << i << " failed: " << (l.error ? l.error->message : "");
    EXPECT_EQ(l.done->token_ids, offline(m, prompts[i], max_tokens).token_ids) << "request " << i;
    EXPECT_EQ(l.streamed_ids, l.done->token_ids) << "request " << i;
  }
  const std::string t = wait_idle(c);
  EXPECT_EQ(metric(t, "dspark_backend_kv_free_blocks"), free0) << t;
  EXPECT_GT(metric(t, "dspark_spec_gate_closed_steps_total"), 0) << t;
  EXPECT_GT(metric(t, "dspark_spec_gate_detached_total") + metric(t, "dspark_spec_gate_plain_admitted_total"), 0) << t;
  EXPECT_EQ(metric(t, "dspark_spec_gate_open"), 1) << "a batch limit is never closed as such: " << t;
  EXPECT_EQ(metric(t, "dspark_spec_gate_windows_total"), 0) << "a batch limit measures no windows: " << t;
  EXPECT_EQ(metric(t, "dspark_spec_gate_reopens_total"), 0) << t;
}

// Pipelined decoding in the server (`dspark serve --pipeline on`, docs/actors.md "Pipelining"):
// the in-process ngram drafter drafts one group of requests on its actor thread while the
// verifier verifies the other. Four concurrent streaming requests equal offline generate()
// token for token; then a request cancelled mid-stream while another runs (two groups, so a
// propose may be in flight) ends `cancelled`, the other still equals offline, and the backend's
// free KV blocks and the reservation come back to the idle baseline.
TEST_F(ServeTest, PipelinedRequestsEqualOfflineAndCancelFreesKv) {
  DSPARK_REQUIRE_MODEL(path);
  auto cfg = test_config(path);
  cfg.draft = "ngram";
  cfg.pipeline = true;
  start(cfg);
  raw_client c(ctx_, srv_->client_endpoint());
  const std::string base = metrics_text(c);
  const double free0 = metric(base, "dspark_backend_kv_free_blocks");
  ASSERT_GT(free0, 0);
  const char* prompts[] = {k_prompts[0], k_prompts[1], k_prompts[2], "List three primary colors:"};
  const int max_tokens = 16;
  std::map<std::string, request_log> logs;
  for (int i = 0; i < 4; ++i) {
    c.send(submit_text("p" + std::to_string(i), prompts[i], max_tokens));
    logs["p" + std::to_string(i)];
  }
  collect(c, logs);
  const model& m = srv_->loaded_model();
  int64_t proposed = 0;
  for (int i = 0; i < 4; ++i) {
    const request_log& l = logs["p" + std::to_string(i)];
    ASSERT_TRUE(l.done) << "request " << i << " failed: " << (l.error ? l.error->message : "");
    EXPECT_EQ(l.done->token_ids, offline(m, prompts[i], max_tokens).token_ids) << "request " << i;
    EXPECT_EQ(l.streamed_ids, l.done->token_ids) << "request " << i;
    EXPECT_EQ(l.streamed_text, l.done->text) << "request " << i;
    proposed += l.done->stats.draft_tokens_proposed;
  }
  EXPECT_GT(proposed, 0) << "the pipelined drafter never proposed";

  // Cancel one of two running requests mid-stream.
  c.send(submit_text("long", k_prompts[2], 400));
  c.send(submit_text("short", k_prompts[1], 40));
  std::map<std::string, request_log> second{{"long", {}}, {"short", {}}};
  while (second["long"].streamed_ids.size() < 4) {
    auto r = c.recv();
    ASSERT_TRUE(r);
    if (auto* t = std::get_if<cm::tokens_reply>(&*r)) {
      auto& l = second[t->id];
      l.streamed_ids.insert(l.streamed_ids.end(), t->token_ids.begin(), t->token_ids.end());
    } else if (auto* d = std::get_if<cm::done_reply>(&*r)) {
      second[d->id].done = *d;
    }
  }
  c.send(cm::cancel_request{"long"});
  collect(c, second);
  ASSERT_TRUE(second["long"].done);
  EXPECT_EQ(second["long"].done->reason, cm::finish_reason::cancelled);
  EXPECT_LT(second["long"].done->token_ids.size(), 400u);
  ASSERT_TRUE(second["short"].done) << (second["short"].error ? second["short"].error->message : "");
  EXPECT_EQ(second["short"].done->token_ids, offline(m, k_prompts[1], 40).token_ids);
  const std::string t = wait_idle(c);
  EXPECT_EQ(metric(t, "dspark_backend_kv_free_blocks"), free0) << t;
  EXPECT_EQ(metric(t, "dspark_kv_blocks_used"), 0) << t;
}

// A replacement scheduler actor (server::replace_scheduler) while requests wait: one decoder
// slot, three streaming requests; once the first streams, the scheduler is replaced; the two
// waiting requests move to the new one in order, every request equals offline generate(), a
// request submitted afterwards is admitted by the new scheduler, and the reservation is back to
// 0 with nothing queued at the end.
TEST_F(ServeTest, ReplacedSchedulerKeepsTheWaitingRequests) {
  DSPARK_REQUIRE_MODEL(path);
  auto cfg = test_config(path);
  cfg.max_requests = 1;
  start(cfg, /*drafter=*/false);
  raw_client c(ctx_, srv_->client_endpoint());
  const int max_tokens = 16;
  std::map<std::string, request_log> logs;
  for (int i = 0; i < 3; ++i) {
    c.send(submit_text("q" + std::to_string(i), k_prompts[i], max_tokens));
    logs["q" + std::to_string(i)];
  }
  std::vector<std::string> first_token_order;
  while (logs["q0"].streamed_ids.empty()) {
    auto r = c.recv();
    ASSERT_TRUE(r);
    if (auto* t = std::get_if<cm::tokens_reply>(&*r)) {
      logs[t->id].streamed_ids.insert(logs[t->id].streamed_ids.end(), t->token_ids.begin(), t->token_ids.end());
      logs[t->id].streamed_text += t->text;
    }
  }
  raw_client probe(ctx_, srv_->client_endpoint());  // metrics_text drops other replies
  const std::string mid = metrics_text(probe);
  EXPECT_EQ(metric(mid, "dspark_queued_requests"), 2) << mid;
  srv_->replace_scheduler();
  c.send(submit_text("q3", k_prompts[0], max_tokens));
  logs["q3"];
  // collect() with the arrival order of each request's first token.
  auto open = [&] {
    for (auto& [id, l] : logs)
      if (!l.ended()) return true;
    return false;
  };
  first_token_order.push_back("q0");
  while (open()) {
    auto r = c.recv();
    ASSERT_TRUE(r) << "no reply within the timeout";
    if (auto* t = std::get_if<cm::tokens_reply>(&*r)) {
      auto& l = logs[t->id];
      if (l.streamed_ids.empty()) first_token_order.push_back(t->id);
      l.streamed_ids.insert(l.streamed_ids.end(), t->token_ids.begin(), t->token_ids.end());
      l.streamed_text += t->text;
    } else if (auto* d = std::get_if<cm::done_reply>(&*r)) {
      logs[d->id].done = *d;
    } else if (auto* e = std::get_if<cm::error_reply>(&*r)) {
      ASSERT_TRUE(e->id.has_value()) << e->message;
      logs[*e->id].error = *e;
    }
  }
  EXPECT_EQ(first_token_order, (std::vector<std::string>{"q0", "q1", "q2", "q3"}));  // FIFO kept
  const model& m = srv_->loaded_model();
  for (int i = 0; i < 4; ++i) {
    const request_log& l = logs["q" + std::to_string(i)];
    ASSERT_TRUE(l.done) << "request " << i << " failed: " << (l.error ? l.error->message : "");
    EXPECT_EQ(l.done->token_ids, offline(m, k_prompts[i % 3], max_tokens).token_ids) << "request " << i;
    EXPECT_EQ(l.streamed_ids, l.done->token_ids) << "request " << i;
  }
  const std::string t = wait_idle(c);
  EXPECT_EQ(metric(t, "dspark_kv_blocks_used"), 0) << t;
  EXPECT_EQ(metric(t, "dspark_queued_requests"), 0) << t;
}

// The confidence schedulers in the server (docs/scheduler.md): cfg.policy scheduled and async
// profile SPS(B) on the verifier's backend at start-up (cached in a temp file, which the second
// server reuses) and schedule on the n-gram drafter's online confidences; concurrent requests
// still equal plain decoding token for token.
TEST_F(ServeTest, ScheduledAndAsyncPoliciesEqualOfflineGenerate) {
  DSPARK_REQUIRE_MODEL(path);
  const std::string profile = (std::filesystem::temp_directory_path() /
                               ("dspark-serve-sps-" + std::to_string(::getpid()) + ".json")).string();
  const int max_tokens = 12;
  for (const char* policy : {"scheduled", "async:2"}) {
    SCOPED_TRACE(policy);
    auto cfg = test_config(path);
    cfg.draft = "ngram";
    cfg.max_requests = 2;  // a profile of verify steps up to 2 x (gamma + 1) tokens: quick to measure
    cfg.policy = policy;
    cfg.sps_profile = profile;
    start(cfg);
    raw_client c(ctx_, srv_->client_endpoint());
    std::map<std::string, request_log> logs = run_prompts(c, max_tokens, /*stream_last=*/true);
    const model& m = srv_->loaded_model();
    for (int i = 0; i < 3; ++i) {
      const request_log& l = logs[std::string("r") + std::to_string(i)];
      ASSERT_TRUE(l.done) << "request " << i << " failed: " << (l.error ? l.error->message : "");
      const generation_result ref = offline(m, k_prompts[i], max_tokens);
      EXPECT_EQ(l.done->token_ids, ref.token_ids) << "request " << i;
      EXPECT_EQ(l.streamed_ids, l.done->token_ids) << "request " << i;
    }
    EXPECT_TRUE(std::filesystem::exists(profile));
    // The scheduler's metrics (actors/scheduler.h): steps were planned, the largest verify step
    // fits max_requests x (gamma + 1), and plan time is positive and far below a step's.
    const std::string t = wait_idle(c);
    EXPECT_GT(metric(t, "dspark_scheduler_plans_total"), 0) << t;
    const double budget_max = metric(t, "dspark_verify_tokens_per_step_max");
    EXPECT_GE(budget_max, 1);
    EXPECT_LE(budget_max, cfg.max_requests * (cfg.gamma + 1));
    const double len = metric(t, "dspark_request_verify_length_mean");
    EXPECT_GE(len, 0);
    EXPECT_LE(len, cfg.gamma);
    const double mean = metric(t, "dspark_scheduler_plan_seconds_mean"), p99 = metric(t, "dspark_scheduler_plan_seconds_p99");
    EXPECT_GT(mean, 0);
    EXPECT_LT(mean, 0.01);
    EXPECT_GT(p99, 0);
    EXPECT_LT(p99, 0.05);
    std::printf("%s: %.0f plans, verify budget max %.0f, %.2f drafts/request/step, plan %.1f us mean, %.1f us p99\n",
                policy, metric(t, "dspark_scheduler_plans_total"), budget_max, len, mean * 1e6, p99 * 1e6);
    srv_.reset();
  }
  std::filesystem::remove(profile);
}

TEST_F(ServeTest, CancelAndDisconnectFreeEveryKvBlock) {
  DSPARK_REQUIRE_MODEL(path);
  start(test_config(path), /*drafter=*/false);
  raw_client c(ctx_, srv_->client_endpoint());
  const std::string base = metrics_text(c);
  const double free0 = metric(base, "dspark_backend_kv_free_blocks");
  ASSERT_GT(free0, 0);
  EXPECT_EQ(metric(base, "dspark_kv_blocks_used"), 0);

  // Cancel mid-stream.
  c.send(submit_text("long", k_prompts[2], 400));
  bool streaming = false;
  while (!streaming) {
    auto r = c.recv();
    ASSERT_TRUE(r);
    streaming = std::holds_alternative<cm::tokens_reply>(*r);
  }
  c.send(cm::cancel_request{"long"});
  std::optional<cm::done_reply> done;
  while (!done) {
    auto r = c.recv();
    ASSERT_TRUE(r);
    if (auto* d = std::get_if<cm::done_reply>(&*r)) done = *d;
  }
  EXPECT_EQ(done->reason, cm::finish_reason::cancelled);
  EXPECT_LT(done->token_ids.size(), 400u);
  std::string t = wait_idle(c);
  EXPECT_EQ(metric(t, "dspark_backend_kv_free_blocks"), free0);
  EXPECT_EQ(metric(t, "dspark_kv_blocks_used"), 0);
  c.send(cm::cancel_request{"long"});  // no longer live
  auto unk = c.recv();
  ASSERT_TRUE(unk && std::holds_alternative<cm::error_reply>(*unk));
  EXPECT_EQ(std::get<cm::error_reply>(*unk).code, cm::error_code::unknown_id);

  // A second client disconnects mid-stream: its request is cancelled and its blocks freed.
  {
    raw_client gone(ctx_, srv_->client_endpoint());
    gone.send(submit_text("g", k_prompts[0], 400));
    bool tokens = false;
    while (!tokens) {
      auto r = gone.recv();
      ASSERT_TRUE(r);
      tokens = std::holds_alternative<cm::tokens_reply>(*r);
    }
    const std::string mid = metrics_text(c);
    EXPECT_LT(metric(mid, "dspark_backend_kv_free_blocks"), free0);
    EXPECT_GT(metric(mid, "dspark_kv_blocks_used"), 0);
  }  // socket closed here
  t = wait_idle(c);
  EXPECT_EQ(metric(t, "dspark_live_requests"), 0) << t;
  EXPECT_EQ(metric(t, "dspark_backend_kv_free_blocks"), free0) << t;
  EXPECT_EQ(metric(t, "dspark_kv_blocks_used"), 0);
  EXPECT_EQ(metric(t, "dspark_requests_total{outcome=\"cancelled\"}"), 2);
}

// Prefix caching (on by default): two requests sharing a system prompt of over 40 tokens, the
// second submitted once the first streams (so it shares the running request's blocks): both
// equal offline generate(), the second reports the shared full blocks as cached tokens, the
// metrics count the hit, and every block is free again (cached ones evictable) when idle.
TEST_F(ServeTest, SharedPrefixRequestsReuseCachedBlocks) {
  DSPARK_REQUIRE_MODEL(path);
  auto cfg = test_config(path);
  cfg.draft = "ngram";
  start(cfg);
  raw_client c(ctx_, srv_->client_endpoint());
  const double free0 = metric(metrics_text(c), "dspark_backend_kv_free_blocks");
  const std::string system =
      "<|im_start|>system\nYou are a terse assistant for a public library. Answer in one sentence, name the "
      "shelf when you can, never invent a book title, and point to the help desk on the ground floor "
      "for anything about fines or lost cards.<|im_end|>\n";
  const std::string p0 = system + "<|im_start|>user\nWhere are the atlases?<|im_end|>\n<|im_start|>assistant\n";
  const std::string p1 = system + "<|im_start|>user\nCan I renew a loan online?<|im_end|>\n<|im_start|>assistant\n";
  const model& m = srv_->loaded_model();
  const auto t0 = m.tokenizer().encode(p0, true, true), t1 = m.tokenizer().encode(p1, true, true);
  size_t common = 0;
  while (common < t0.size() && common < t1.size() && t0[common] == t1[common]) ++common;
  ASSERT_GE(common, 40u);
  const int64_t want_cached = static_cast<int64_t>(std::min(common, t1.size() - 1) / 16 * 16);

  std::map<std::string, request_log> logs;
  c.send(submit_text("a", p0, 16));
  while (logs["a"].streamed_ids.empty()) {  // a is prefilled and decoding
    auto r = c.recv();
    ASSERT_TRUE(r);
    if (auto* t = std::get_if<cm::tokens_reply>(&*r)) logs["a"].streamed_ids = t->token_ids;
    ASSERT_FALSE(std::holds_alternative<cm::done_reply>(*r)) << "a ended before b joined";
  }
  logs["a"].streamed_ids.clear();
  c.send(submit_text("b", p1, 16));
  logs["b"];
  collect(c, logs);
  ASSERT_TRUE(logs["a"].done && logs["b"].done);
  EXPECT_EQ(logs["a"].done->token_ids, offline(m, p0, 16).token_ids);
  EXPECT_EQ(logs["b"].done->token_ids, offline(m, p1, 16).token_ids);
  EXPECT_EQ(logs["a"].done->stats.cached_tokens, 0);
  EXPECT_EQ(logs["b"].done->stats.cached_tokens, want_cached);
  EXPECT_EQ(logs["b"].done->stats.prompt_tokens, static_cast<int64_t>(t1.size()));

  const std::string t = wait_idle(c);
  EXPECT_EQ(metric(t, "dspark_prefix_cache_queries_total"), 2) << t;
  EXPECT_EQ(metric(t, "dspark_prefix_cache_hits_total"), 1);
  EXPECT_EQ(metric(t, "dspark_prefix_cache_hit_tokens_total"), want_cached);
  EXPECT_GT(metric(t, "dspark_prefix_cache_blocks"), 0);
  EXPECT_EQ(metric(t, "dspark_prefix_cache_evictable_blocks"), metric(t, "dspark_prefix_cache_blocks"));
  EXPECT_EQ(metric(t, "dspark_backend_kv_free_blocks"), free0);
  EXPECT_EQ(metric(t, "dspark_kv_blocks_used"), 0);
  EXPECT_EQ(metric(t, "dspark_kv_blocks_shared"), 0);
}

TEST_F(ServeTest, QueueLimitAndMalformedFramesKeepServing) {
  DSPARK_REQUIRE_MODEL(path);
  auto cfg = test_config(path);
  cfg.max_queued = 1;
  cfg.max_message_bytes = 4096;
  start(cfg, false);
  raw_client c(ctx_, srv_->client_endpoint());
  c.send_raw("{not json");
  auto e1 = c.recv();
  ASSERT_TRUE(e1 && std::holds_alternative<cm::error_reply>(*e1));
  EXPECT_EQ(std::get<cm::error_reply>(*e1).code, cm::error_code::bad_request);
  c.send_raw(std::string(5000, ' '));
  auto e2 = c.recv();
  ASSERT_TRUE(e2 && std::holds_alternative<cm::error_reply>(*e2));
  EXPECT_EQ(std::get<cm::error_reply>(*e2).code, cm::error_code::too_large);
  // Two frames in one message (not the protocol): an error, no crash.
  c.socket().send(zmq::str_buffer("{}"), zmq::send_flags::sndmore);
  c.socket().send(zmq::str_buffer("{}"), zmq::send_flags::none);
  auto e3 = c.recv();
  ASSERT_TRUE(e3 && std::holds_alternative<cm::error_reply>(*e3));

  std::map<std::string, request_log> logs;
  c.send(submit_text("a", k_prompts[0], 6));
  c.send(submit_text("b", k_prompts[1], 6));  // over max_queued = 1
  logs["a"];
  logs["b"];
  collect(c, logs);
  ASSERT_TRUE(logs["b"].error);
  EXPECT_EQ(logs["b"].error->code, cm::error_code::overloaded);
  ASSERT_TRUE(logs["a"].done);
  EXPECT_EQ(logs["a"].done->token_ids, offline(srv_->loaded_model(), k_prompts[0], 6).token_ids);
  // The prompt is too long for the context: invalid_params naming the lengths.
  std::string huge;
  for (int i = 0; i < 600; ++i) huge += " word";
  cm::submit_request s = submit_text("c", huge, 4);
  cfg.max_message_bytes = 1 << 20;
  logs.clear();
  logs["c"];
  c.send(s);
  collect(c, logs);
  ASSERT_TRUE(logs["c"].error);
  EXPECT_EQ(logs["c"].error->code, cm::error_code::invalid_params);
}

TEST_F(ServeTest, DrainFinishesInFlightRequests) {
  DSPARK_REQUIRE_MODEL(path);
  start(test_config(path), false);
  raw_client c(ctx_, srv_->client_endpoint());
  std::map<std::string, request_log> logs;
  c.send(submit_text("x", k_prompts[0], 10));
  c.send(submit_text("y", k_prompts[1], 10));
  logs["x"];
  logs["y"];
  // Wait until both are accepted, then drain while they run.
  int accepted = 0;
  while (accepted < 2) {
    auto r = c.recv();
    ASSERT_TRUE(r);
    if (auto* a = std::get_if<cm::accepted_reply>(&*r)) {
      logs[a->id].accepted = true;
      ++accepted;
    } else if (auto* t = std::get_if<cm::tokens_reply>(&*r)) {
      logs[t->id].streamed_ids.insert(logs[t->id].streamed_ids.end(), t->token_ids.begin(), t->token_ids.end());
    }
  }
  bool drained = false;
  std::thread drainer([&] { drained = srv_->drain(std::chrono::seconds(60)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  c.send(submit_text("late", k_prompts[2], 4));
  logs["late"];
  collect(c, logs);
  drainer.join();
  EXPECT_TRUE(drained);
  ASSERT_TRUE(logs["x"].done);
  ASSERT_TRUE(logs["y"].done);
  EXPECT_EQ(logs["x"].done->token_ids, offline(srv_->loaded_model(), k_prompts[0], 10).token_ids);
  EXPECT_EQ(logs["x"].done->reason, cm::finish_reason::length);
  ASSERT_TRUE(logs["late"].error);
  EXPECT_EQ(logs["late"].error->code, cm::error_code::overloaded);
  c.send(cm::health_request{});
  auto h = c.recv();
  ASSERT_TRUE(h && std::holds_alternative<cm::health_reply>(*h));
  EXPECT_EQ(std::get<cm::health_reply>(*h).status, cm::health_status::draining);
}

// Stop strings end a request as in generate() (finish `stop`, the string not in the text), and
// the streamed pieces still concatenate to the final text.
TEST_F(ServeTest, StopStringsEndAsOffline) {
  DSPARK_REQUIRE_MODEL(path);
  start(test_config(path), false);
  raw_client c(ctx_, srv_->client_endpoint());
  cm::submit_request s = submit_text("s", "Write three short lines about the sea.", 40);
  s.params.stop = {"\n"};
  std::map<std::string, request_log> logs;
  logs["s"];
  c.send(s);
  collect(c, logs);
  ASSERT_TRUE(logs["s"].done);
  sampling_params p;
  p.max_tokens = 40;
  p.stop = {"\n"};
  const generation_result ref = offline(srv_->loaded_model(), "Write three short lines about the sea.", p);
  EXPECT_EQ(logs["s"].done->text, ref.text);
  EXPECT_EQ(logs["s"].done->token_ids, ref.token_ids);
  EXPECT_EQ(logs["s"].streamed_text, logs["s"].done->text);
  EXPECT_EQ(logs["s"].done->reason, ref.finish == finish_reason::max_tokens ? cm::finish_reason::length : cm::finish_reason::stop);
}

// params.ignore_eos: the request runs through the model's end-of-turn token to max_tokens
// ("length"), with the same tokens as offline generate() with ignore_eos.
TEST_F(ServeTest, IgnoreEosRunsToMaxTokensAsOffline) {
  DSPARK_REQUIRE_MODEL(path);
  start(test_config(path), false);
  raw_client c(ctx_, srv_->client_endpoint());
  const std::string prompt = "Say hi.";
  const model& m = srv_->loaded_model();
  sampling_params p;
  p.max_tokens = 48;
  const generation_result stops = offline(m, prompt, p);
  p.ignore_eos = true;
  const generation_result ref = offline(m, prompt, p);
  ASSERT_EQ(ref.finish, finish_reason::max_tokens);
  cm::submit_request s = submit_text("e", prompt, 48);
  s.params.ignore_eos = true;
  std::map<std::string, request_log> logs;
  logs["e"];
  c.send(s);
  collect(c, logs);
  ASSERT_TRUE(logs["e"].done);
  EXPECT_EQ(logs["e"].done->reason, cm::finish_reason::length);
  EXPECT_EQ(logs["e"].done->token_ids, ref.token_ids);
  EXPECT_EQ(logs["e"].done->token_ids.size(), 48u);
  // Without it the same prompt ends at the end-of-turn token when offline decoding does.
  if (stops.finish == finish_reason::stop_id) EXPECT_LT(stops.token_ids.size(), 48u);
}

// Garbage from a rogue peer on the internal links (engine and drafter ROUTERs) is dropped; the
// server keeps serving.
TEST_F(ServeTest, GarbageOnInternalLinksIsDropped) {
  DSPARK_REQUIRE_MODEL(path);
  auto cfg = test_config(path);
  cfg.drafter_endpoint = "tcp://127.0.0.1:*";
  start(cfg, false);
  zmq::context_t& sctx = srv_->zmq_context();  // the engine link is inproc
  for (const std::string& ep : {srv_->engine_endpoint(), srv_->drafter_endpoint()}) {
    zmq::socket_t rogue(ep.rfind("inproc", 0) == 0 ? sctx : ctx_, zmq::socket_type::dealer);
    rogue.set(zmq::sockopt::linger, 1000);
    rogue.connect(ep);
    rogue.send(zmq::str_buffer("\x01\x01\x00garbage"), zmq::send_flags::none);
    rogue.send(zmq::str_buffer("\x09"), zmq::send_flags::none);
    rogue.send(zmq::str_buffer("a"), zmq::send_flags::sndmore);
    rogue.send(zmq::str_buffer("b"), zmq::send_flags::none);
    std::string hello;  // a hello that asks for a layer this verifier does not capture: refused
    msg::encode(msg::drafter_hello{"rogue", draft_dist_kind::one_hot, 0, {3}}, hello);
    rogue.send(zmq::buffer(hello), zmq::send_flags::none);
  }
  raw_client c(ctx_, srv_->client_endpoint());
  std::map<std::string, request_log> logs;
  logs["ok"];
  c.send(submit_text("ok", k_prompts[0], 8));
  collect(c, logs);
  ASSERT_TRUE(logs["ok"].done);
  EXPECT_EQ(logs["ok"].done->token_ids, offline(srv_->loaded_model(), k_prompts[0], 8).token_ids);
  EXPECT_EQ(logs["ok"].done->stats.draft_tokens_proposed, 0);
}

// docs/protocol.md: tcp endpoints may use CURVE. A server with a secret key answers a client
// that knows its public key and nobody else.
TEST_F(ServeTest, CurveClientEndpointAnswersOnlyKeyHolders) {
  DSPARK_REQUIRE_MODEL(path);
  char server_pub[41], server_sec[41], client_pub[41], client_sec[41];
  ASSERT_EQ(zmq_curve_keypair(server_pub, server_sec), 0);
  ASSERT_EQ(zmq_curve_keypair(client_pub, client_sec), 0);
  auto cfg = test_config(path);
  cfg.curve_secret_key = server_sec;
  start(cfg, false);
  raw_client plain(ctx_, srv_->client_endpoint());
  plain.send(cm::health_request{});
  EXPECT_FALSE(plain.recv(std::chrono::milliseconds(500)).has_value()) << "a plain client was answered";
  zmq::socket_t s(ctx_, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::curve_serverkey, std::string(server_pub));
  s.set(zmq::sockopt::curve_publickey, std::string(client_pub));
  s.set(zmq::sockopt::curve_secretkey, std::string(client_sec));
  s.connect(srv_->client_endpoint());
  const std::string f = cm::encode(cm::client_message{cm::health_request{}});
  s.send(zmq::buffer(f), zmq::send_flags::none);
  zmq::pollitem_t it{s.handle(), 0, ZMQ_POLLIN, 0};
  ASSERT_EQ(zmq::poll(&it, 1, std::chrono::milliseconds(10000)), 1);
  zmq::message_t m;
  ASSERT_TRUE(s.recv(m));
  auto r = cm::decode_server_message(m.to_string_view());
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(std::holds_alternative<cm::health_reply>(r.value()));
}

}  // namespace
}  // namespace dspark::test

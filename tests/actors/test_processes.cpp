// The split layout (`dspark verifier`, `dspark drafter`, `dspark intake` as processes over ipc,
// wired by one JSON config; SIGTERM drains the intake's in-flight requests) and drafter hot swap: a drafter process is SIGKILLed in the middle
// of a batch, a different kind started; every request completes and equals plain decoding at
// temperature 0 (offline generate()).
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "actors_test_support.h"
#include "process_support.h"
#include "tests/test_support.h"

namespace dspark::test {
namespace {

namespace fs = std::filesystem;

struct temp_dir {
  fs::path path;
  temp_dir() {
    path = fs::temp_directory_path() / ("dspark-actors-" + std::to_string(::getpid()) + "-" + std::to_string(std::rand()));
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string ipc(const std::string& name) const { return "ipc://" + (path / name).string(); }
};

std::string write_config(const temp_dir& d, const config::server_config& c) {
  nlohmann::json j = {{"model", c.model},
                      {"threads", 1},
                      {"n_ctx", c.n_ctx},
                      {"max_requests", c.max_requests},
                      {"client_endpoint", c.client_endpoint},
                      {"engine_endpoint", c.engine_endpoint},
                      {"drafter_endpoint", c.drafter_endpoint},
                      {"drafter_timeout_ms", c.drafter_timeout_ms}};
  if (!c.link_curve_secret_key.empty()) j["link_curve_secret_key"] = c.link_curve_secret_key;
  const std::string p = (d.path / "server.json").string();
  std::ofstream(p) << j.dump(2);
  return p;
}

std::string metrics_of(raw_client& c) {
  c.send(cm::metrics_request{});
  for (;;) {
    auto r = c.recv(std::chrono::seconds(60));
    if (!r) return "";
    if (auto* m = std::get_if<cm::metrics_reply>(&*r)) return m->text;
  }
}

// Waits until the metrics name `drafter` as the connected drafter.
bool wait_for_drafter(raw_client& c, const std::string& drafter, std::chrono::seconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  const std::string want = "dspark_drafter_connected{name=\"" + drafter + "\"} 1";
  while (std::chrono::steady_clock::now() < end) {
    if (metrics_of(c).find(want) != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

// Every link over ipc in `d`: the split layout of `dspark verifier|drafter|intake`.
config::server_config split_config(const temp_dir& d, const std::string& model_path) {
  config::server_config cfg = test_config(model_path);
  cfg.client_endpoint = d.ipc("clients");
  cfg.engine_endpoint = d.ipc("engine");
  cfg.drafter_endpoint = d.ipc("drafter");
  return cfg;
}

const char* k_prompts[] = {
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "List three primary colors:",
};

// Submits prompts 0..n-1 (12 tokens each, ids prefix + i) and checks every output equals offline
// generate(); `logs` is printed on failure.
void expect_prompts_equal_offline(raw_client& c, const std::string& model_path, int n, const std::string& prefix,
                                  const std::string& logs) {
  std::map<std::string, request_log> got;
  for (int i = 0; i < n; ++i) {
    c.send(submit_text(prefix + std::to_string(i), k_prompts[i], 12));
    got[prefix + std::to_string(i)];
  }
  collect(c, got);
  const model m = load_model(model_path);
  for (int i = 0; i < n; ++i) {
    const request_log& l = got[prefix + std::to_string(i)];
    ASSERT_TRUE(l.done) << (l.error ? l.error->message : "") << logs;
    EXPECT_EQ(l.done->token_ids, offline(m, k_prompts[i], 12).token_ids) << i;
  }
}

TEST(SplitProcesses, VerifierDrafterIntakeOverIpcEqualOffline) {
  DSPARK_REQUIRE_MODEL(path);
  temp_dir d;
  const config::server_config cfg = split_config(d, path);
  const std::string conf = write_config(d, cfg);
  const std::string cli = dspark_cli();
  child_process verifier({cli, "verifier", "--config", conf}, (d.path / "verifier.log").string());
  child_process drafter({cli, "drafter", "--config", conf, "--draft", "ngram"}, (d.path / "drafter.log").string());
  child_process intake({cli, "intake", "--config", conf}, (d.path / "intake.log").string());

  zmq::context_t ctx;
  raw_client c(ctx, cfg.client_endpoint);  // ZeroMQ connects once the intake has bound
  ASSERT_TRUE(wait_for_drafter(c, "ngram", std::chrono::seconds(60))) << verifier.log() << drafter.log();
  std::map<std::string, request_log> logs;
  for (int i = 0; i < 3; ++i) {
    c.send(submit_text(std::string("p") + std::to_string(i), k_prompts[i], 10));
    logs[std::string("p") + std::to_string(i)];
  }
  // SIGTERM the intake once tokens stream: it drains (every in-flight request ends with done),
  // then exits 0.
  for (bool streaming = false; !streaming;) {
    auto r = c.recv(std::chrono::seconds(60));
    ASSERT_TRUE(r);
    if (auto* a = std::get_if<cm::accepted_reply>(&*r)) logs[a->id].accepted = true;
    if (auto* t = std::get_if<cm::tokens_reply>(&*r)) {
      logs[t->id].streamed_ids = t->token_ids;
      logs[t->id].streamed_text = t->text;
      streaming = true;
    }
  }
  intake.signal(SIGTERM);
  collect(c, logs);
  EXPECT_EQ(intake.wait(std::chrono::seconds(30)), 0) << intake.log();
  const model m = load_model(path);
  int64_t proposed = 0;
  for (int i = 0; i < 3; ++i) {
    const request_log& l = logs[std::string("p") + std::to_string(i)];
    ASSERT_TRUE(l.done) << (l.error ? l.error->message : "") << intake.log();
    EXPECT_EQ(l.done->token_ids, offline(m, k_prompts[i], 10).token_ids) << i;
    EXPECT_EQ(l.streamed_text, l.done->text);
    proposed += l.done->stats.draft_tokens_proposed;
  }
  EXPECT_GT(proposed, 0) << "the drafter process never proposed";
  for (child_process* p : {&drafter, &verifier}) p->signal(SIGTERM);
  EXPECT_EQ(drafter.wait(std::chrono::seconds(30)), 0) << drafter.log();
  EXPECT_EQ(verifier.wait(std::chrono::seconds(30)), 0) << verifier.log();
}

// The CLI path of docs/scheduler.md in the split layout: `dspark verifier --policy async:2`
// (SPS(B) profiled at start-up into --sps-profile) and `dspark drafter --draft ngram
// --draft-skip auto:0.5` (the skipping decorator behind the remote-drafter protocol); the
// requests still equal plain decoding.
TEST(SplitProcesses, AsyncPolicyAndDraftSkippingEqualOffline) {
  DSPARK_REQUIRE_MODEL(path);
  temp_dir d;
  config::server_config cfg = split_config(d, path);
  cfg.max_requests = 2;  // a small step-time profile
  const std::string conf = write_config(d, cfg);
  const std::string cli = dspark_cli();
  child_process verifier({cli, "verifier", "--config", conf, "--policy", "async:2", "--sps-profile",
                          (d.path / "sps.json").string()},
                         (d.path / "verifier.log").string());
  child_process drafter({cli, "drafter", "--config", conf, "--draft", "ngram", "--draft-skip", "auto:0.5"},
                        (d.path / "drafter.log").string());
  child_process intake({cli, "intake", "--config", conf}, (d.path / "intake.log").string());
  zmq::context_t ctx;
  raw_client c(ctx, cfg.client_endpoint);
  ASSERT_TRUE(wait_for_drafter(c, "ngram", std::chrono::seconds(90))) << verifier.log() << drafter.log() << intake.log();
  expect_prompts_equal_offline(c, path, 3, "q", verifier.log() + drafter.log());
  EXPECT_TRUE(fs::exists(d.path / "sps.json")) << verifier.log();
  for (child_process* p : {&intake, &drafter, &verifier}) p->signal(SIGTERM);
  EXPECT_EQ(drafter.wait(std::chrono::seconds(30)), 0) << drafter.log();
  EXPECT_EQ(verifier.wait(std::chrono::seconds(30)), 0) << verifier.log();
}

// `dspark verifier --pipeline on` with an ngram `dspark drafter` process over ipc: the remote
// drafter's split-phase propose lets the drafter process draft one group while the verifier
// verifies the other; four concurrent requests equal plain decoding.
TEST(SplitProcesses, PipelinedVerifierWithDrafterProcessEqualsOffline) {
  DSPARK_REQUIRE_MODEL(path);
  temp_dir d;
  const config::server_config cfg = split_config(d, path);
  const std::string conf = write_config(d, cfg);
  const std::string cli = dspark_cli();
  child_process verifier({cli, "verifier", "--config", conf, "--pipeline", "on"}, (d.path / "verifier.log").string());
  child_process drafter({cli, "drafter", "--config", conf, "--draft", "ngram"}, (d.path / "drafter.log").string());
  child_process intake({cli, "intake", "--config", conf}, (d.path / "intake.log").string());
  zmq::context_t ctx;
  raw_client c(ctx, cfg.client_endpoint);
  ASSERT_TRUE(wait_for_drafter(c, "ngram", std::chrono::seconds(60))) << verifier.log() << drafter.log();
  expect_prompts_equal_offline(c, path, 4, "pp", verifier.log() + drafter.log());
  const std::string mt = metrics_of(c);
  const auto at = mt.find("\ndspark_draft_tokens_proposed_total ");
  ASSERT_NE(at, std::string::npos) << mt;
  EXPECT_GT(std::stod(mt.substr(at + std::strlen("\ndspark_draft_tokens_proposed_total "))), 0) << "never drafted";
  for (child_process* p : {&intake, &drafter, &verifier}) p->signal(SIGTERM);
  EXPECT_EQ(intake.wait(std::chrono::seconds(30)), 0) << intake.log();
  EXPECT_EQ(drafter.wait(std::chrono::seconds(30)), 0) << drafter.log();
  EXPECT_EQ(verifier.wait(std::chrono::seconds(30)), 0) << verifier.log();
}

// The internal links over tcp with CURVE (link_curve_secret_key in the shared config): the
// verifier binds engine and drafter endpoints as CURVE servers, drafter and intake connect with
// the public key; the drafter is adopted and outputs equal offline.
TEST(SplitProcesses, CurveOnTcpLinksEqualOffline) {
  DSPARK_REQUIRE_MODEL(path);
  if (!zmq_has("curve")) GTEST_SKIP() << "libzmq built without CURVE";
  temp_dir d;
  config::server_config cfg = split_config(d, path);
  const int port = 20000 + static_cast<int>(::getpid() % 20000);
  cfg.engine_endpoint = "tcp://127.0.0.1:" + std::to_string(port);
  cfg.drafter_endpoint = "tcp://127.0.0.1:" + std::to_string(port + 1);
  char pub[41], sec[41];
  ASSERT_EQ(zmq_curve_keypair(pub, sec), 0);
  cfg.link_curve_secret_key = std::string(sec, 40);
  const std::string conf = write_config(d, cfg);
  const std::string cli = dspark_cli();
  child_process verifier({cli, "verifier", "--config", conf}, (d.path / "verifier.log").string());
  child_process drafter({cli, "drafter", "--config", conf, "--draft", "ngram"}, (d.path / "drafter.log").string());
  child_process intake({cli, "intake", "--config", conf}, (d.path / "intake.log").string());
  zmq::context_t ctx;
  raw_client c(ctx, cfg.client_endpoint);
  ASSERT_TRUE(wait_for_drafter(c, "ngram", std::chrono::seconds(60))) << verifier.log() << drafter.log() << intake.log();
  expect_prompts_equal_offline(c, path, 2, "c", verifier.log() + drafter.log());
  for (child_process* p : {&intake, &drafter, &verifier}) p->signal(SIGTERM);
  EXPECT_EQ(verifier.wait(std::chrono::seconds(30)), 0) << verifier.log();
}

// A verifier that dies mid-stream ends every live request with error `internal` (no client
// waits forever); a restarted verifier is reconnected by the intake and re-adopts the drafter,
// which announces itself again; serving resumes and equals offline.
TEST(SplitProcesses, VerifierLossEndsRequestsAndRestartResumes) {
  DSPARK_REQUIRE_MODEL(path);
  temp_dir d;
  const config::server_config cfg = split_config(d, path);
  const std::string conf = write_config(d, cfg);
  const std::string cli = dspark_cli();
  auto verifier = std::make_unique<child_process>(std::vector<std::string>{cli, "verifier", "--config", conf},
                                                  (d.path / "verifier.log").string());
  child_process drafter({cli, "drafter", "--config", conf, "--draft", "ngram"}, (d.path / "drafter.log").string());
  child_process intake({cli, "intake", "--config", conf}, (d.path / "intake.log").string());
  zmq::context_t ctx;
  raw_client c(ctx, cfg.client_endpoint);
  ASSERT_TRUE(wait_for_drafter(c, "ngram", std::chrono::seconds(60))) << verifier->log();
  std::map<std::string, request_log> logs;
  c.send(submit_text("v1", k_prompts[0], 300));
  c.send(submit_text("v2", k_prompts[1], 300));
  logs["v1"];
  logs["v2"];
  for (bool streaming = false; !streaming;) {
    auto r = c.recv(std::chrono::seconds(60));
    ASSERT_TRUE(r);
    streaming = std::holds_alternative<cm::tokens_reply>(*r);
  }
  verifier->signal(SIGKILL);
  collect(c, logs, std::chrono::seconds(30));
  for (const char* id : {"v1", "v2"}) {
    ASSERT_TRUE(logs[id].error) << id << " did not end with an error";
    EXPECT_EQ(logs[id].error->code, cm::error_code::internal);
  }
  verifier = std::make_unique<child_process>(std::vector<std::string>{cli, "verifier", "--config", conf},
                                             (d.path / "verifier2.log").string());
  ASSERT_TRUE(wait_for_drafter(c, "ngram", std::chrono::seconds(60))) << verifier->log() << drafter.log();
  logs.clear();
  c.send(submit_text("v3", k_prompts[2], 10));
  logs["v3"];
  collect(c, logs);
  ASSERT_TRUE(logs["v3"].done) << (logs["v3"].error ? logs["v3"].error->message : "");
  EXPECT_EQ(logs["v3"].done->token_ids, offline(load_model(path), k_prompts[2], 10).token_ids);
  EXPECT_GT(logs["v3"].done->stats.draft_tokens_proposed, 0);
  for (child_process* p : {&intake, &drafter, verifier.get()}) p->signal(SIGTERM);
  EXPECT_EQ(intake.wait(std::chrono::seconds(30)), 0);
  EXPECT_EQ(drafter.wait(std::chrono::seconds(30)), 0);
  EXPECT_EQ(verifier->wait(std::chrono::seconds(30)), 0);
}

TEST(HotSwap, SigkillDrafterMidBatchThenStartAnotherKind) {
  DSPARK_REQUIRE_MODEL(path);
  temp_dir d;
  auto cfg = test_config(path);
  cfg.drafter_endpoint = d.ipc("drafter");
  const std::string conf = write_config(d, cfg);
  actors::server_roles roles;  // intake + verifier here; drafters are processes
  roles.drafter = false;
  actors::server srv(cfg, roles, cpu_factories());
  zmq::context_t ctx;
  raw_client c(ctx, srv.client_endpoint());
  const std::string cli = dspark_cli();
  auto ngram = std::make_unique<child_process>(std::vector<std::string>{cli, "drafter", "--config", conf, "--draft", "ngram"},
                                               (d.path / "ngram.log").string());
  ASSERT_TRUE(wait_for_drafter(c, "ngram", std::chrono::seconds(60))) << ngram->log();

  // A batch of 4; the ngram drafter dies after the first tokens stream back.
  const int max_tokens = 40;
  std::map<std::string, request_log> logs;
  for (int i = 0; i < 4; ++i) {
    c.send(submit_text(std::string("h") + std::to_string(i), k_prompts[i], max_tokens));
    logs[std::string("h") + std::to_string(i)];
  }
  size_t streamed = 0;
  while (streamed < 8) {
    auto r = c.recv(std::chrono::seconds(60));
    ASSERT_TRUE(r);
    if (auto* t = std::get_if<cm::tokens_reply>(&*r)) {
      auto& l = logs[t->id];
      l.streamed_ids.insert(l.streamed_ids.end(), t->token_ids.begin(), t->token_ids.end());
      l.streamed_text += t->text;
      streamed += t->token_ids.size();
    } else if (auto* a = std::get_if<cm::accepted_reply>(&*r)) {
      logs[a->id].accepted = true;
    } else if (auto* dn = std::get_if<cm::done_reply>(&*r)) {
      logs[dn->id].done = *dn;
    }
  }
  ngram->signal(SIGKILL);
  EXPECT_EQ(ngram->wait(std::chrono::seconds(10)), 128 + SIGKILL);
  child_process layerskip({cli, "drafter", "--config", conf, "--draft", "layerskip:8"}, (d.path / "layerskip.log").string());
  collect(c, logs);
  const model& m = srv.loaded_model();
  for (int i = 0; i < 4; ++i) {
    const request_log& l = logs[std::string("h") + std::to_string(i)];
    ASSERT_TRUE(l.done) << "request " << i << ": " << (l.error ? l.error->message : "");
    EXPECT_EQ(l.done->token_ids, offline(m, k_prompts[i], max_tokens).token_ids) << i;
    EXPECT_EQ(l.streamed_ids, l.done->token_ids) << i;
  }
  // The new kind takes over from the next step on: a second batch drafts with it.
  ASSERT_TRUE(wait_for_drafter(c, "layerskip:8", std::chrono::seconds(60))) << layerskip.log();
  logs.clear();
  for (int i = 0; i < 2; ++i) {
    c.send(submit_text(std::string("n") + std::to_string(i), k_prompts[i], 12));
    logs[std::string("n") + std::to_string(i)];
  }
  collect(c, logs);
  int64_t proposed = 0;
  for (int i = 0; i < 2; ++i) {
    const request_log& l = logs[std::string("n") + std::to_string(i)];
    ASSERT_TRUE(l.done);
    EXPECT_EQ(l.done->token_ids, offline(m, k_prompts[i], 12).token_ids) << i;
    proposed += l.done->stats.draft_tokens_proposed;
  }
  EXPECT_GT(proposed, 0) << "the layer-skip drafter never proposed";
  layerskip.signal(SIGTERM);
  EXPECT_EQ(layerskip.wait(std::chrono::seconds(30)), 0) << layerskip.log();
}

}  // namespace
}  // namespace dspark::test

// A drafter that reads target features (a random-weight DSpark drafter of SmolLM2's dims, as in
// tests/drafters) served as a separate process: the verifier captures the layers its config
// names, the features of every committed row (the prompt rows after prefill included) travel
// inline in commit messages, and the output at temperature 0 still equals offline generate().
#include <filesystem>
#include <fstream>
#include <thread>

#include "actors_test_support.h"
#include "process_support.h"
#include "tests/drafters/drafter_fixture.h"
#include "tests/test_support.h"

namespace dspark::test {
namespace {

namespace fs = std::filesystem;

TEST(FeatureDrafter, DsparkDrafterProcessGetsFeaturesInlineAndStaysLossless) {
  DSPARK_REQUIRE_MODEL(path);
  const fs::path dir = scratch_dir("actors-feature");
  auto cfg = test_config(path);
  cfg.drafter_endpoint = "ipc://" + (dir / "drafter").string();
  cfg.drafter_timeout_ms = 2000;
  cfg.draft_capture_layers = {1, 8, 15, 22, 28};
  actors::server_roles roles;
  roles.drafter = false;
  actors::server srv(cfg, roles, cpu_factories());
  const model& m = srv.loaded_model();
  const std::string drafter_dir = random_target_drafter(m, "dspark");
  nlohmann::json j = {{"model", path}, {"threads", 1}, {"n_ctx", cfg.n_ctx}, {"max_requests", cfg.max_requests},
                      {"drafter_endpoint", cfg.drafter_endpoint}};
  const std::string conf = (dir / "drafter.json").string();
  std::ofstream(conf) << j.dump();
  child_process drafter({dspark_cli(), "drafter", "--config", conf, "--draft", "dspark:" + drafter_dir},
                        (dir / "drafter.log").string());
  zmq::context_t ctx;
  raw_client c(ctx, srv.client_endpoint());
  bool up = false;
  for (int i = 0; i < 300 && !up; ++i) {
    c.send(cm::metrics_request{});
    auto r = c.recv(std::chrono::seconds(30));
    ASSERT_TRUE(r && std::holds_alternative<cm::metrics_reply>(*r));
    const std::string& t = std::get<cm::metrics_reply>(*r).text;
    up = t.find("dspark_drafter_connected{name=\"\"} 0") == std::string::npos;
    if (!up) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(up) << drafter.log();
  const char* prompts[] = {"The capital of France is", "def fibonacci(n):"};
  std::map<std::string, request_log> logs;
  for (int i = 0; i < 2; ++i) {
    c.send(submit_text(std::string("f") + std::to_string(i), prompts[i], 12));
    logs[std::string("f") + std::to_string(i)];
  }
  collect(c, logs);
  int64_t proposed = 0;
  for (int i = 0; i < 2; ++i) {
    const request_log& l = logs[std::string("f") + std::to_string(i)];
    ASSERT_TRUE(l.done) << (l.error ? l.error->message : "") << drafter.log();
    EXPECT_EQ(l.done->token_ids, offline(m, prompts[i], 12).token_ids) << i;
    proposed += l.done->stats.draft_tokens_proposed;
  }
  EXPECT_GT(proposed, 0) << "the dspark drafter never proposed: " << drafter.log();
  drafter.signal(SIGTERM);
  EXPECT_EQ(drafter.wait(std::chrono::seconds(30)), 0) << drafter.log();
}

}  // namespace
}  // namespace dspark::test

// The JSON server config: defaults, overrides, comments, and errors naming the key for unknown
// keys, wrong types and values out of range.
#include <gtest/gtest.h>

#include <filesystem>

#include "config/server_config.h"
#include "tests/test_support.h"

namespace dspark::config {
namespace {

std::string error_of(const std::string& json) {
  server_config c;
  try {
    apply_config_json(json, c);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

TEST(ServerConfig, DefaultsOverridesAndComments) {
  server_config c;
  apply_config_json("{}", c);
  EXPECT_EQ(c.gamma, 4);
  EXPECT_EQ(c.client_endpoint, "tcp://127.0.0.1:5555");
  apply_config_json(R"({"_comment": "x", "gamma": 7, "draft": "layerskip:8", "drafter_endpoint": ""})", c);
  EXPECT_EQ(c.gamma, 7);
  EXPECT_EQ(c.draft, "layerskip:8");
  EXPECT_EQ(c.drafter_endpoint, "");
}

TEST(ServerConfig, PrefixCacheKey) {
  server_config c;
  EXPECT_TRUE(c.prefix_cache);  // on by default for serving
  apply_config_json(R"({"prefix_cache": false})", c);
  EXPECT_FALSE(c.prefix_cache);
  EXPECT_NE(error_of(R"({"prefix_cache": 1})").find("'prefix_cache' has the wrong type"), std::string::npos);
  EXPECT_FALSE(c.pipeline);  // off by default
  apply_config_json(R"({"pipeline": true})", c);
  EXPECT_TRUE(c.pipeline);
  EXPECT_NE(error_of(R"({"pipeline": "on"})").find("'pipeline' has the wrong type"), std::string::npos);
  EXPECT_EQ(c.spec_gate, "off");  // off by default
  apply_config_json(R"({"spec_gate": "auto"})", c);
  EXPECT_EQ(c.spec_gate, "auto");
  apply_config_json(R"({"spec_gate": "64"})", c);
  EXPECT_EQ(c.spec_gate, "64");
  EXPECT_NE(error_of(R"({"spec_gate": "sometimes"})").find("config key 'spec_gate'"), std::string::npos);
  EXPECT_NE(error_of(R"({"spec_gate": "0"})").find("config key 'spec_gate'"), std::string::npos);
  apply_config_json(R"({"spec_gate": "auto:0.02"})", c);
  EXPECT_EQ(c.spec_gate, "auto:0.02");
  EXPECT_NE(error_of(R"({"spec_gate": "auto:2"})").find("probe budget in (0, 1]"), std::string::npos);
}

TEST(ServerConfig, ErrorsNameTheKey) {
  EXPECT_NE(error_of(R"({"gama": 4})").find("unknown config key 'gama'"), std::string::npos);
  EXPECT_NE(error_of(R"({"gamma": "four"})").find("'gamma' has the wrong type"), std::string::npos);
  EXPECT_NE(error_of(R"({"gamma": 65})").find("'gamma' must be in [1, 64]"), std::string::npos);
  EXPECT_NE(error_of(R"({"device": "tpu"})").find("'device'"), std::string::npos);
  EXPECT_NE(error_of(R"({"curve_secret_key": "short"})").find("'curve_secret_key'"), std::string::npos);
  EXPECT_NE(error_of("[1, 2]").find("JSON object"), std::string::npos);
  EXPECT_NE(error_of("{not json").find("not valid JSON"), std::string::npos);
  EXPECT_THROW(load_server_config("/nonexistent/dspark.json"), std::runtime_error);
}

TEST(ServerConfig, PolicyKeys) {
  server_config c;
  EXPECT_EQ(c.policy, "fixed");
  apply_config_json(R"({"policy": "async:3", "threshold": 0.25, "sps_profile": "/tmp/p.json"})", c);
  EXPECT_EQ(c.policy, "async:3");
  EXPECT_DOUBLE_EQ(c.threshold, 0.25);
  EXPECT_EQ(c.sps_profile, "/tmp/p.json");
  for (const char* ok : {"fixed", "threshold", "scheduled", "async", "async:1", "async:8"}) {
    EXPECT_EQ(error_of(std::string(R"({"policy": ")") + ok + "\"}"), "") << ok;
  }
  const std::string bad = error_of(R"({"policy": "greedy"})");
  EXPECT_NE(bad.find("config key 'policy'"), std::string::npos) << bad;
  EXPECT_NE(bad.find("fixed, threshold, scheduled or async[:LAG]"), std::string::npos) << bad;
  EXPECT_NE(error_of(R"({"policy": "async:9"})").find("LAG in [1, 8]"), std::string::npos);
  EXPECT_NE(error_of(R"({"policy": "async:x"})").find("LAG in [1, 8]"), std::string::npos);
  EXPECT_NE(error_of(R"({"policy": 3})").find("'policy' has the wrong type"), std::string::npos);
  EXPECT_NE(error_of(R"({"threshold": 1.5})").find("'threshold' must be in [0, 1]"), std::string::npos);
  apply_config_json(R"({"draft_skip": "auto:0.5"})", c);
  EXPECT_EQ(c.draft_skip, "auto:0.5");
  EXPECT_NE(error_of(R"({"draft_skip": "maybe"})").find("config key 'draft_skip'"), std::string::npos);
  EXPECT_NE(error_of(R"({"draft_skip": "auto:-2"})").find("COST in [0, 64]"), std::string::npos);
}

// Every config the repository ships (the Quick start's, the split stack's and the compose
// stacks') loads and passes validation, so a key renamed in the parser cannot leave a
// deployment that fails at start-up.
TEST(ServerConfig, ShippedConfigsLoad) {
  const std::string root = test::source_dir();
  int n = 0;
  for (const std::string dir : {root + "/config", root + "/deploy/config"}) {
    for (const auto& e : std::filesystem::directory_iterator(dir)) {
      if (e.path().extension() != ".json") continue;
      EXPECT_NO_THROW(load_server_config(e.path().string())) << e.path();
      ++n;
    }
  }
  EXPECT_GE(n, 5) << "config/serve.json, split.json and deploy/config/{edge,datacenter,datacenter-gpu}.json";
  // The GPU stack runs the measured configuration that stays at plain decoding's throughput
  // where speculation does not pay (docs/scheduler.md): async capacity, the gate, skipping.
  const server_config gpu = load_server_config(root + "/deploy/config/datacenter-gpu.json");
  EXPECT_EQ(gpu.policy, "async");
  EXPECT_EQ(gpu.spec_gate, "auto");
  EXPECT_EQ(gpu.draft_skip, "auto");
}

}  // namespace
}  // namespace dspark::config

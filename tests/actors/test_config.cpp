// The JSON server config: defaults, overrides, comments, and errors naming the key for unknown
// keys, wrong types and values out of range.
#include <gtest/gtest.h>

#include "config/server_config.h"

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

}  // namespace
}  // namespace dspark::config

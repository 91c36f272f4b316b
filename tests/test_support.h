// Helpers shared by the test binaries: where the test data and the default model are.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace dspark::test {

inline std::string source_dir() {
  if (const char* s = std::getenv("DSPARK_SOURCE_DIR")) return s;
#ifdef DSPARK_SOURCE_DIR
  return DSPARK_SOURCE_DIR;
#else
  return ".";
#endif
}

// tests/<rel>, e.g. data_path("golden/smollm2_logits.json").
inline std::string data_path(const std::string& rel) { return source_dir() + "/tests/" + rel; }

// The default model (SmolLM2-135M-Instruct Q4_1 GGUF), fetched by scripts/fetch_model.sh into
// .models/. DSPARK_MODEL overrides. Empty when absent: callers GTEST_SKIP() naming the fix.
inline std::string default_model_path() {
  if (const char* m = std::getenv("DSPARK_MODEL")) return m;
  std::string p = source_dir() + "/.models/SmolLM2-135M-Instruct.Q4_1.gguf";
  return std::filesystem::exists(p) ? p : std::string();
}

#define DSPARK_REQUIRE_MODEL(var)                                                          \
  const std::string var = ::dspark::test::default_model_path();                            \
  if (var.empty()) GTEST_SKIP() << "default model not found: run scripts/fetch_model.sh " \
                                   "(make test does) or set DSPARK_MODEL";

}  // namespace dspark::test

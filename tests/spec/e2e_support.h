// Shared setup of the end-to-end speculative tests: the default model loaded once, a CPU
// backend, evaluation prompts from the shared prompt sets, and a batched runner.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "engine/cpu_backend.h"
#include "engine/model.h"
#include "engine/spec/prompt_set.h"
#include "engine/spec/spec_decoder.h"
#include "models/tokenizer/tokenizer.h"
#include "tests/test_support.h"

namespace dspark::test {

// A count from the environment (for quick local runs), else `fallback`.
inline size_t env_count(const char* name, size_t fallback) {
  const char* v = std::getenv(name);
  return v && std::atoi(v) > 0 ? static_cast<size_t>(std::atoi(v)) : fallback;
}

// The shared prompt sets: $DSPARK_SOURCE_DIR/../shared/data; empty when absent.
inline std::string prompt_data_dir() {
  const std::string d = source_dir() + "/../shared/data";
  return std::filesystem::exists(d + "/gsm8k.jsonl") ? d : std::string();
}

// Up to n chat-encoded prompts of at most max_tokens tokens, taken round-robin from the math
// and code sets (so both domains are covered), in file order.
inline std::vector<std::vector<int32_t>> mixed_prompts(const tokenizer& tok, size_t n, size_t max_tokens) {
  const std::string dir = prompt_data_dir();
  std::vector<std::vector<std::string>> sets;
  for (const char* f : {"gsm8k", "mbpp", "math500", "humaneval", "lbpp", "livecodebench"})
    sets.push_back(read_first_turns(dir + "/" + f + ".jsonl", 400));
  std::vector<std::vector<int32_t>> out;
  std::vector<size_t> next(sets.size(), 0);
  bool any = true;
  while (out.size() < n && any) {
    any = false;
    for (size_t s = 0; s < sets.size() && out.size() < n; ++s) {
      while (next[s] < sets[s].size()) {
        std::vector<int32_t> p = encode_chat_prompt(tok, sets[s][next[s]++]);
        any = true;
        if (p.size() <= max_tokens) {
          out.push_back(std::move(p));
          break;
        }
      }
    }
  }
  return out;
}

// The default model, loaded once per test binary; null when absent.
inline const model* shared_model() {
  static std::unique_ptr<model> m = [] {
    const std::string p = default_model_path();
    return p.empty() ? nullptr : std::make_unique<model>(load_model(p));
  }();
  return m.get();
}

inline cpu_backend_options e2e_backend_options(int32_t n_seq) {
  cpu_backend_options o;
  o.n_seq_max = n_seq;
  o.n_ctx = 1024;
  o.max_tokens_per_step = 256;
  return o;
}

}  // namespace dspark::test

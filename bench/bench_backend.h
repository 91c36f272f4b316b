// The backend a model benchmark runs on: CPU, or CUDA when built with it (header-only; each
// bench/*.cpp is its own executable).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/backend.h"
#include "engine/cpu_backend.h"
#include "engine/model.h"
#ifdef DSPARK_HAVE_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace dspark::bench {

// n_seq sequences of up to n_ctx positions, steps of up to max_tokens new tokens, KV blocks of
// kv_block_size positions (0: the backend's default). Throws std::invalid_argument for "cuda" in
// a build without CUDA.
inline std::unique_ptr<backend> make_backend(const std::string& device, const model& m, int32_t n_seq, int32_t n_ctx,
                                             int32_t max_tokens, int32_t kv_block_size = 0) {
  if (device == "cuda") {
#ifdef DSPARK_HAVE_CUDA
    cuda::cuda_backend_options o;
    o.n_seq_max = n_seq;
    o.n_ctx = n_ctx;
    o.max_tokens_per_step = std::max(max_tokens, n_seq);
    if (kv_block_size > 0) o.kv_block_size = kv_block_size;
    return std::make_unique<cuda::cuda_backend>(m.config(), m.weights(), o);
#else
    throw std::invalid_argument("this binary was built without CUDA");
#endif
  }
  cpu_backend_options o;
  o.n_seq_max = n_seq;
  o.n_ctx = n_ctx;
  o.max_tokens_per_step = std::max(max_tokens, n_seq);
  if (kv_block_size > 0) o.kv_block_size = kv_block_size;
  return std::make_unique<cpu_backend>(m.config(), m.weights(), o);
}

// The command line every model benchmark shares: --model PATH, --device cpu|cuda, --json.
struct common_args {
  std::string model;
  std::string device = "cpu";
  bool json = false;
};

// Prints "<name>: <why>" and the usage line, exits 2.
[[noreturn]] inline void usage_exit(const char* name, const std::string& why, const char* usage_line) {
  std::fprintf(stderr, "%s: %s\nusage: %s\n", name, why.c_str(), usage_line);
  std::exit(2);
}

// Reads the common options and hands every other `--key value` to on_option, which returns
// false for a key it does not know. Exits 2 (usage_exit) on a bad command line.
inline common_args parse_common(int argc, char** argv, const char* name, const char* usage_line,
                                const std::function<bool(const std::string&, const std::string&)>& on_option) {
  common_args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--json") {
      a.json = true;
      continue;
    }
    if (i + 1 >= argc) usage_exit(name, "option " + k + " needs a value", usage_line);
    const std::string v = argv[++i];
    if (k == "--model") a.model = v;
    else if (k == "--device") a.device = v;
    else if (!on_option(k, v)) usage_exit(name, "unknown option " + k, usage_line);
  }
  if (a.model.empty()) usage_exit(name, "--model is required", usage_line);
  if (a.device != "cpu" && a.device != "cuda") usage_exit(name, "--device must be cpu or cuda", usage_line);
  return a;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace dspark::bench

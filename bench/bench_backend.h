// The backend a model benchmark runs on: CPU, or CUDA when built with it (header-only; each
// bench/*.cpp is its own executable).
#pragma once

#include <algorithm>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "engine/backend.h"
#include "engine/cpu_backend.h"
#include "engine/model.h"
#ifdef DSPARK_HAVE_CUDA
#include "engine/cuda/cuda_backend.h"
#endif

namespace dspark::bench {

// n_seq sequences of up to n_ctx positions, steps of up to max_tokens new tokens. Throws
// std::invalid_argument for "cuda" in a build without CUDA.
inline std::unique_ptr<backend> make_backend(const std::string& device, const model& m, int32_t n_seq, int32_t n_ctx,
                                             int32_t max_tokens) {
  if (device == "cuda") {
#ifdef DSPARK_HAVE_CUDA
    cuda::cuda_backend_options o;
    o.n_seq_max = n_seq;
    o.n_ctx = n_ctx;
    o.max_tokens_per_step = std::max(max_tokens, n_seq);
    return std::make_unique<cuda::cuda_backend>(m.config(), m.weights(), o);
#else
    throw std::invalid_argument("this binary was built without CUDA");
#endif
  }
  cpu_backend_options o;
  o.n_seq_max = n_seq;
  o.n_ctx = n_ctx;
  o.max_tokens_per_step = std::max(max_tokens, n_seq);
  return std::make_unique<cpu_backend>(m.config(), m.weights(), o);
}

}  // namespace dspark::bench

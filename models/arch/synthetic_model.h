// A model of a real architecture's SHAPE with random bf16 weights, for benchmarks of models
// whose weights are not here (the 8B shapes on the GPU machine): same config, same tensor
// sizes, same compute and memory traffic per step as the real model; the outputs are
// meaningless. Used by bench/bench_load.cpp (--synthetic) and, for its shapes alone,
// bench/bench_cuda.cpp.
//
// Shapes:
//   qwen3-8b              36 layers, width 4096, 32/8 heads of 128 (q/k RMSNorm), FFN 12288,
//                         vocabulary 151936, RoPE theta 1e6, untied head
//   llama3-8b (llama3.1-8b) 32 layers, width 4096, 32/8 heads of 128, FFN 14336, vocabulary
//                         128256, RoPE theta 5e5 with llama3 scaling, untied head
//   smollm2-135m          30 layers, width 576, 9/3 heads of 64, FFN 1536, vocabulary 49152,
//                         RoPE theta 1e5, untied head (the real model ties it; a step reads the
//                         same bytes): the launch-bound case
//   tiny                  2 layers, width 64, 4/2 heads of 16, FFN 128, vocabulary 512 (tests)
//
// Host memory: the layers SHARE one layer's random matrices (the backend copies every layer to
// its own device memory, so device traffic is the real model's), plus the embedding and head:
// about 3 GB for the 8B shapes instead of 16. Values: uniform, matrices scaled 1/sqrt(n_in) so
// activations stay O(1), embedding in [-1, 1], norm gains 1; generated from a counter-based
// hash of (seed, tensor, element) on all cores, so the same seed gives the same weights.
// No EOS ids: requests on it always run to max_tokens.
//
// Greedy text: with random weights the top two logits of a step are often close, and bf16
// kernels round differently at different batch shapes, so two runs of the same prompt can
// part ways (replayed acceptance counts that as an oracle miss, replay_drafter.h). The `echo`
// variant avoids it: the embedding is scaled by 16 so it dominates the residual stream, and
// the LM head holds the embedding's values (still a separate, full-size matrix for the
// backend, so the cost is unchanged): greedy decoding then repeats the last prompt token with
// a margin far beyond rounding. The text is meaningless either way; the cost is the same.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/arch/llama_weights.h"
#include "models/arch/model_config.h"

namespace dspark {

enum class synthetic_text { random, echo };

struct synthetic_model {
  model_config config;
  llama_weights weights;  // views into storage
  std::vector<std::vector<uint16_t>> storage;  // bf16 buffers
};

// The known shape names, for messages: "qwen3-8b, llama3-8b (or llama3.1-8b), smollm2-135m, tiny".
std::string synthetic_shape_names();

// The named shape's config alone (no weights). invalid_argument_error for an unknown name.
model_config synthetic_shape_config(const std::string& shape, int64_t n_ctx_train = 4096);

// Builds the named shape with random weights. n_ctx_train is set to `n_ctx_train` (the
// backend's context comes from its own options). invalid_argument_error for an unknown name.
std::unique_ptr<synthetic_model> make_synthetic_model(const std::string& shape, uint64_t seed = 1234,
                                                      int64_t n_ctx_train = 4096,
                                                      synthetic_text text = synthetic_text::random);

}  // namespace dspark

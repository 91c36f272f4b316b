// Test helpers: a tiny safetensors writer and random drafter folders (drafter.json +
// model.safetensors) with a fixed seed, so tests need no files from outside.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "models/formats/tensor_view.h"

namespace dspark {
class model;
}

namespace dspark::test {

struct named_tensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> data;
};

// Writes `tensors` as one safetensors file, F32 or BF16 (bf16 = true; values rounded to nearest).
void write_safetensors(const std::string& path, const std::vector<named_tensor>& tensors, bool bf16 = false);

struct tiny_dims {
  std::string kind = "dspark";   // dspark | dflash | eagle3 | mtp1
  int64_t n_vocab = 64, n_embd = 32, target_layers_total = 4;
  std::vector<int32_t> target_layers = {0, 2};
  int32_t block_size = 4;
  int64_t n_layer = 2, n_head = 4, n_head_kv = 2, head_dim = 8, n_ff = 48;
  std::string markov = "vanilla";  // none | vanilla | rnn
  int64_t rank = 8;
  bool confidence = true;
  bool qk_norm = false;
  double rope_theta = 10000.0;
  std::string target_name = "tiny";
};

// An f32 [rows, cols] view of v (which must outlive it), e.g. a random target head.
tensor_view f32_view(const std::vector<float>& v, int64_t rows, int64_t cols, const char* name);

// drafter.json content for the dims.
nlohmann::json tiny_config(const tiny_dims& d);
// The tensors a drafter with config `j` needs, random (normal * scale, norms near 1), seeded.
std::vector<named_tensor> random_drafter_tensors(const nlohmann::json& j, uint32_t seed, float scale = 0.2f);
// A fresh folder under the test temp dir holding drafter.json + model.safetensors.
std::string write_drafter_folder(const std::string& name, const nlohmann::json& j,
                                 const std::vector<named_tensor>& tensors);
// A unique scratch directory (removed at process exit).
std::string scratch_dir(const std::string& name);

// A random drafter of `kind` sized for the target model m (SmolLM2: target layers 1, 8, 15,
// 22, 28; eagle3/mtp1 one layer, mtp1 on the last target layer) in a temp folder.
std::string random_target_drafter(const model& m, const std::string& kind);

}  // namespace dspark::test

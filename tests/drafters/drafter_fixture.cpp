// Test helpers: safetensors writer and random drafters.
#include "tests/drafters/drafter_fixture.h"

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include <unistd.h>

#include "engine/model.h"
#include "models/drafters/drafter_config.h"
#include "models/drafters/drafter_weights.h"

namespace dspark::test {

namespace {

uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFF + ((u >> 16) & 1);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

struct scratch_root {
  std::string path;
  scratch_root() {
    path = (std::filesystem::temp_directory_path() / ("dspark-drafters-" + std::to_string(::getpid()))).string();
    std::filesystem::create_directories(path);
  }
  ~scratch_root() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

}  // namespace

tensor_view f32_view(const std::vector<float>& v, int64_t rows, int64_t cols, const char* name) {
  tensor_view t;
  t.name = name;
  t.type = dtype::f32;
  t.shape = {rows, cols};
  t.data = reinterpret_cast<const uint8_t*>(v.data());
  t.n_bytes = v.size() * sizeof(float);
  return t;
}

std::string scratch_dir(const std::string& name) {
  static scratch_root root;
  static int counter = 0;
  const std::string p = root.path + "/" + name + "-" + std::to_string(counter++);
  std::filesystem::create_directories(p);
  return p;
}

void write_safetensors(const std::string& path, const std::vector<named_tensor>& tensors, bool bf16) {
  nlohmann::json h = nlohmann::json::object();
  size_t off = 0;
  const size_t es = bf16 ? 2 : 4;
  for (const named_tensor& t : tensors) {
    const size_t n = t.data.size() * es;
    h[t.name] = {{"dtype", bf16 ? "BF16" : "F32"}, {"shape", t.shape}, {"data_offsets", {off, off + n}}};
    off += n;
  }
  std::string hs = h.dump();
  while (hs.size() % 8 != 0) hs += ' ';
  std::ofstream out(path, std::ios::binary);
  const uint64_t hl = hs.size();
  out.write(reinterpret_cast<const char*>(&hl), 8);
  out.write(hs.data(), static_cast<std::streamsize>(hs.size()));
  for (const named_tensor& t : tensors) {
    if (bf16) {
      for (float f : t.data) {
        const uint16_t b = to_bf16(f);
        out.write(reinterpret_cast<const char*>(&b), 2);
      }
    } else {
      out.write(reinterpret_cast<const char*>(t.data.data()), static_cast<std::streamsize>(t.data.size() * 4));
    }
  }
}

nlohmann::json tiny_config(const tiny_dims& d) {
  nlohmann::json j;
  j["format"] = "dspark-drafter";
  j["format_version"] = 1;
  j["kind"] = d.kind;
  j["target"] = {{"n_vocab", d.n_vocab}, {"n_embd", d.n_embd}, {"n_layer", d.target_layers_total}, {"name", d.target_name}};
  j["target_layers"] = d.target_layers;
  j["block_size"] = d.block_size;
  if (d.kind == "dspark" || d.kind == "dflash") j["mask_token_id"] = 3;
  j["n_layer"] = d.n_layer;
  j["n_embd"] = d.n_embd;
  j["n_head"] = d.n_head;
  j["n_head_kv"] = d.n_head_kv;
  j["head_dim"] = d.head_dim;
  j["n_ff"] = d.n_ff;
  j["rms_eps"] = 1e-5;
  j["rope_theta"] = d.rope_theta;
  j["rope_scaling"] = nullptr;
  j["qk_norm"] = d.qk_norm;
  j["markov"] = {{"type", d.markov}, {"rank", d.rank}};
  nlohmann::json temps = nlohmann::json::array();
  for (int i = 0; i < d.block_size; ++i) temps.push_back(1.0 + 0.25 * i);
  j["confidence"] = {{"enabled", d.confidence}, {"temperatures", temps}};
  j["training"] = nlohmann::json::object();
  return j;
}

std::vector<named_tensor> random_drafter_tensors(const nlohmann::json& j, uint32_t seed, float scale) {
  const drafter_config c = parse_drafter_config(j);
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<named_tensor> out;
  for (const auto& [name, shape] : expected_drafter_tensors(c)) {
    named_tensor t{name, shape, {}};
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    t.data.resize(static_cast<size_t>(n));
    const bool gain = name.find("norm") != std::string::npos;
    // Fan-in scaling keeps activations O(1) through the layers.
    const float fan = shape.size() == 2 ? 1.0f / std::sqrt(static_cast<float>(shape[1])) : 1.0f;
    for (float& x : t.data) x = gain ? 1.0f + 0.1f * nd(rng) : scale * 5.0f * fan * nd(rng);
    out.push_back(std::move(t));
  }
  return out;
}

std::string write_drafter_folder(const std::string& name, const nlohmann::json& j,
                                 const std::vector<named_tensor>& tensors) {
  const std::string dir = scratch_dir(name);
  std::ofstream(dir + "/drafter.json") << j.dump(2);
  write_safetensors(dir + "/model.safetensors", tensors);
  return dir;
}

// A random drafter of the target's dims (fc/markov sizes from SmolLM2) in a temp folder.
std::string random_target_drafter(const model& m, const std::string& kind) {
  tiny_dims d;
  d.kind = kind;
  d.n_vocab = m.config().n_vocab;
  d.n_embd = m.config().n_embd;
  d.target_layers_total = m.config().n_layer;
  d.target_layers = {1, 8, 15, 22, 28};
  d.block_size = 4;
  d.n_head = 9;
  d.n_head_kv = 3;
  d.head_dim = 64;
  d.n_ff = 256;
  d.rank = 16;
  d.rope_theta = 100000.0;
  d.markov = kind == "dspark" ? "vanilla" : "none";
  d.confidence = kind == "dspark";
  if (kind == "eagle3" || kind == "mtp1") d.n_layer = 1;
  if (kind == "mtp1") {
    d.block_size = 1;
    d.target_layers = {static_cast<int32_t>(m.config().n_layer - 1)};
  }
  const nlohmann::json j = tiny_config(d);
  return write_drafter_folder(kind, j, random_drafter_tensors(j, 42));
}


}  // namespace dspark::test

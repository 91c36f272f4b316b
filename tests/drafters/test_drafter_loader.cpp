// drafter.json and weight loading: a valid folder loads; each malformed config or tensor set
// fails with a message naming the problem; random mutations of drafter.json never crash.
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include <gtest/gtest.h>

#include "common/error.h"
#include "models/drafters/drafter_config.h"
#include "models/drafters/drafter_weights.h"
#include "tests/drafters/drafter_fixture.h"

namespace dspark {
namespace {

using nlohmann::json;
using test::named_tensor;

TEST(DrafterLoader, ValidFoldersOfEveryKindLoad) {
  for (const char* kind : {"dspark", "dflash", "eagle3", "mtp1"}) {
    test::tiny_dims d;
    d.kind = kind;
    if (d.kind != "dspark") d.markov = "none";
    if (d.kind == "eagle3" || d.kind == "mtp1") {
      d.confidence = false;
      d.n_layer = 1;
    }
    if (d.kind == "mtp1") {
      d.block_size = 1;
      d.target_layers = {3};
    }
    const json j = test::tiny_config(d);
    const std::string dir = test::write_drafter_folder(kind, j, test::random_drafter_tensors(j, 1));
    const drafter_config c = load_drafter_config(dir);
    EXPECT_EQ(drafter_kind_name(c.kind), std::string(kind));
    const drafter_weights w = load_drafter_weights(dir, c);
    EXPECT_EQ(w.fc.shape, (std::vector<int64_t>{32, 32 * static_cast<int64_t>(d.target_layers.size())}));
    EXPECT_EQ(w.layers.size(), static_cast<size_t>(d.n_layer));
  }
}

TEST(DrafterLoader, Bf16AndShardedFoldersLoadTheSameValues) {
  const json j = test::tiny_config({});
  std::vector<named_tensor> t = test::random_drafter_tensors(j, 2);
  const std::string dir1 = test::write_drafter_folder("f32", j, t);
  // Sharded: two files and an index.
  const std::string dir2 = test::scratch_dir("sharded");
  std::ofstream(dir2 + "/drafter.json") << j.dump();
  const size_t half = t.size() / 2;
  test::write_safetensors(dir2 + "/model-00001-of-00002.safetensors", {t.begin(), t.begin() + half}, true);
  test::write_safetensors(dir2 + "/model-00002-of-00002.safetensors", {t.begin() + half, t.end()}, true);
  json idx;
  for (size_t i = 0; i < t.size(); ++i)
    idx["weight_map"][t[i].name] = i < half ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  std::ofstream(dir2 + "/model.safetensors.index.json") << idx.dump();
  const drafter_config c = load_drafter_config(dir1);
  const drafter_weights a = load_drafter_weights(dir1, c), b = load_drafter_weights(dir2, c);
  ASSERT_EQ(a.fc.data.size(), b.fc.data.size());
  for (size_t i = 0; i < a.fc.data.size(); ++i) EXPECT_NEAR(a.fc.data[i], b.fc.data[i], 1e-2 * std::abs(a.fc.data[i]) + 1e-6);
  EXPECT_NEAR(a.markov_w2.data[5], b.markov_w2.data[5], 1e-2 * std::abs(a.markov_w2.data[5]) + 1e-6);
}

struct config_case {
  const char* what;
  std::function<void(json&)> edit;
  const char* message;  // a substring of the error
};

TEST(DrafterLoader, MalformedConfigsGiveClearErrors) {
  const std::vector<config_case> cases = {
      {"wrong format", [](json& j) { j["format"] = "gguf"; }, "format"},
      {"future version", [](json& j) { j["format_version"] = 2; }, "format_version"},
      {"unknown kind", [](json& j) { j["kind"] = "medusa"; }, "kind"},
      {"missing field", [](json& j) { j.erase("n_head"); }, "n_head: missing"},
      {"missing target field", [](json& j) { j["target"].erase("n_vocab"); }, "target.n_vocab: missing"},
      {"string for int", [](json& j) { j["n_ff"] = "48"; }, "n_ff: expected an integer"},
      {"negative size", [](json& j) { j["head_dim"] = -8; }, "head_dim"},
      {"odd head_dim", [](json& j) { j["head_dim"] = 7; }, "even"},
      {"gqa mismatch", [](json& j) { j["n_head_kv"] = 3; }, "n_head_kv"},
      {"width differs from target", [](json& j) { j["n_embd"] = 16; }, "n_embd"},
      {"layer out of range", [](json& j) { j["target_layers"] = {0, 9}; }, "target_layers"},
      {"layer twice", [](json& j) { j["target_layers"] = {2, 2}; }, "listed twice"},
      {"last layer for dspark", [](json& j) { j["target_layers"] = {0, 3}; }, "only by mtp1"},
      {"empty layers", [](json& j) { j["target_layers"] = json::array(); }, "target_layers"},
      {"mask out of vocab", [](json& j) { j["mask_token_id"] = 64; }, "mask_token_id"},
      {"unknown markov", [](json& j) { j["markov"]["type"] = "lstm"; }, "markov.type"},
      {"markov rank missing", [](json& j) { j["markov"].erase("rank"); }, "markov.rank"},
      {"temperatures length", [](json& j) { j["confidence"]["temperatures"] = {1, 1}; }, "confidence.temperatures"},
      {"zero temperature", [](json& j) { j["confidence"]["temperatures"][1] = 0; }, "positive"},
      {"rope scaling type", [](json& j) { j["rope_scaling"] = {{"rope_type", "yarn"}}; }, "llama3"},
      {"qk_norm not bool", [](json& j) { j["qk_norm"] = 1; }, "qk_norm"},
      {"dflash with markov", [](json& j) { j["kind"] = "dflash"; }, "dflash"},
      {"eagle3 two layers", [](json& j) { j["kind"] = "eagle3"; j["markov"]["type"] = "none"; j["confidence"]["enabled"] = false; }, "n_layer"},
      {"mtp1 wrong layers", [](json& j) { j["kind"] = "mtp1"; j["n_layer"] = 1; j["block_size"] = 1; j["markov"]["type"] = "none"; j["confidence"]["enabled"] = false; }, "mtp1"},
      {"not an object", [](json& j) { j = json::array(); }, "expected an object"},
  };
  for (const config_case& c : cases) {
    json j = test::tiny_config({});
    c.edit(j);
    try {
      parse_drafter_config(j);
      ADD_FAILURE() << c.what << ": accepted";
    } catch (const format_error& e) {
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << c.what << ": " << e.what();
    }
  }
}

struct tensor_case {
  const char* what;
  std::function<void(std::vector<named_tensor>&)> edit;
  const char* message;
};

TEST(DrafterLoader, MalformedTensorSetsGiveClearErrors) {
  const std::vector<tensor_case> cases = {
      {"missing", [](auto& t) { t.erase(t.begin() + 3); }, "missing tensor layers.0.attn_q.weight"},
      {"extra", [](auto& t) { t.push_back({"lm_head.weight", {2}, {0, 0}}); }, "unexpected tensor lm_head.weight"},
      {"wrong shape", [](auto& t) { t[0].shape = {32, 32}; t[0].data.resize(32 * 32); }, "fc.weight has shape [32, 32], expected [32, 64]"},
      {"transposed", [](auto& t) { std::swap(t[0].shape[0], t[0].shape[1]); }, "fc.weight has shape"},
      {"missing markov", [](auto& t) { std::erase_if(t, [](const named_tensor& x) { return x.name == "markov.w2.weight"; }); }, "markov.w2.weight"},
  };
  const json j = test::tiny_config({});
  const drafter_config c = parse_drafter_config(j);
  for (const tensor_case& tc : cases) {
    std::vector<named_tensor> t = test::random_drafter_tensors(j, 3);
    tc.edit(t);
    const std::string dir = test::write_drafter_folder("bad", j, t);
    try {
      load_drafter_weights(dir, c);
      ADD_FAILURE() << tc.what << ": accepted";
    } catch (const format_error& e) {
      EXPECT_NE(std::string(e.what()).find(tc.message), std::string::npos) << tc.what << ": " << e.what();
    }
  }
  // No weights at all, a truncated file, and an index naming a missing shard.
  const std::string empty = test::scratch_dir("empty");
  EXPECT_THROW(load_drafter_weights(empty, c), format_error);
  EXPECT_THROW(load_drafter_config(empty), format_error);
  const std::string trunc = test::write_drafter_folder("trunc", j, test::random_drafter_tensors(j, 4));
  std::filesystem::resize_file(trunc + "/model.safetensors", 100);
  EXPECT_THROW(load_drafter_weights(trunc, c), format_error);
  const std::string idx = test::scratch_dir("idx");
  std::ofstream(idx + "/model.safetensors.index.json") << R"({"weight_map": {"fc.weight": "nope.safetensors"}})";
  EXPECT_THROW(load_drafter_weights(idx, c), format_error);
}

// Random edits of a valid config (drop, retype, perturb fields) parse or throw format_error;
// nothing else escapes and nothing crashes.
TEST(DrafterLoader, RandomMutationsOfTheConfigNeverCrash) {
  std::mt19937 rng(7);
  const json base = test::tiny_config({});
  std::vector<std::string> keys;
  for (const auto& [k, v] : base.items()) keys.push_back(k);
  const std::vector<json> values = {nullptr, -1, 0, 1, 3, 1e9, -2.5, "x", true, json::array(), json::object(),
                                    json::array({1, 2}), int64_t{1} << 40};
  int accepted = 0;
  for (int it = 0; it < 2000; ++it) {
    json j = base;
    const int n_edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < n_edits; ++e) {
      const std::string& k = keys[rng() % keys.size()];
      json* target = &j[k];
      if (target->is_object() && !target->empty() && rng() % 2) {
        auto it2 = target->begin();
        std::advance(it2, static_cast<long>(rng() % target->size()));
        target = &it2.value();
      }
      if (rng() % 5 == 0) j.erase(k);
      else *target = values[rng() % values.size()];
    }
    try {
      parse_drafter_config(j);
      ++accepted;
    } catch (const format_error&) {
    }
  }
  EXPECT_LT(accepted, 2000);  // most mutations are invalid
}

}  // namespace
}  // namespace dspark

// Weight binding: a tiny HF folder and GGUF load; wrong shapes, missing tensors, unsupported
// dtypes and corrupted files give format_error naming the tensor (and the shapes).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "engine/model.h"
#include "models/tokenizer/tokenizer.h"
#include "tests/engine/test_model_gguf_writer.h"
#include "tests/engine/test_model_tiny.h"
#include "tests/test_support.h"

namespace dspark {
namespace {

const model_load_options k_no_tokenizer{.load_tokenizer = false};

std::string load_error(const std::string& path) {
  try {
    load_model(path, k_no_tokenizer);
  } catch (const format_error& e) {
    return e.what();
  }
  return "(loaded without error)";
}

TEST(ModelWeights, TinyHfFolderBindsEveryTensor) {
  test::tiny_spec s;
  s.arch = "Qwen2ForCausalLM";
  const model m = load_model(test::write_tiny_hf(test::scratch_dir("bind"), s, test::make_tiny_weights(s)),
                             k_no_tokenizer);
  const auto& w = m.weights();
  ASSERT_EQ(w.layers.size(), 2u);
  EXPECT_EQ(w.token_embd.shape, (std::vector<int64_t>{64, 32}));
  EXPECT_EQ(w.output.name, "lm_head.weight");
  EXPECT_EQ(w.layers[1].wk.shape, (std::vector<int64_t>{16, 32}));
  EXPECT_EQ(w.layers[1].bq.size(), 32u);
  EXPECT_EQ(w.layers[0].ffn_norm.size(), 32u);
  EXPECT_TRUE(w.layers[0].q_norm.empty());
  EXPECT_FALSE(m.has_tokenizer());
}

TEST(ModelWeights, TiedEmbeddingsReuseTheTable) {
  test::tiny_spec s;
  s.tied = true;
  const model m = load_model(test::write_tiny_hf(test::scratch_dir("tied"), s, test::make_tiny_weights(s)),
                             k_no_tokenizer);
  EXPECT_EQ(m.weights().output.data, m.weights().token_embd.data);
}

TEST(ModelWeights, HalfPrecisionFoldersLoad) {
  test::tiny_spec s;
  for (const char* dt : {"F16", "BF16"}) {
    const model m = load_model(
        test::write_tiny_hf(test::scratch_dir(std::string("half_") + dt), s, test::make_tiny_weights(s), dt),
        k_no_tokenizer);
    EXPECT_EQ(m.weights().layers[0].wq.type, std::string(dt) == "F16" ? dtype::f16 : dtype::bf16);
    EXPECT_NEAR(m.weights().layers[0].attn_norm[0], test::make_tiny_weights(s).at(
        "model.layers.0.input_layernorm.weight").data[0], 1e-2);
  }
}

TEST(ModelWeights, WrongShapeNamesTensorAndShapes) {
  test::tiny_spec s;
  auto w = test::make_tiny_weights(s);
  w["model.layers.1.mlp.up_proj.weight"].shape = {32, 48};  // transposed
  const std::string msg = load_error(test::write_tiny_hf(test::scratch_dir("shape"), s, w));
  EXPECT_NE(msg.find("model.layers.1.mlp.up_proj.weight"), std::string::npos) << msg;
  EXPECT_NE(msg.find("[32, 48]"), std::string::npos) << msg;
  EXPECT_NE(msg.find("expected [48, 32]"), std::string::npos) << msg;
}

TEST(ModelWeights, MissingTensorIsNamed) {
  test::tiny_spec s;
  auto w = test::make_tiny_weights(s);
  w.erase("model.layers.0.self_attn.v_proj.weight");
  const std::string msg = load_error(test::write_tiny_hf(test::scratch_dir("missing"), s, w));
  EXPECT_NE(msg.find("missing tensor model.layers.0.self_attn.v_proj.weight"), std::string::npos) << msg;

  w = test::make_tiny_weights(s);
  w.erase("lm_head.weight");  // untied config without an LM head
  EXPECT_NE(load_error(test::write_tiny_hf(test::scratch_dir("nohead"), s, w)).find("lm_head.weight"),
            std::string::npos);
}

TEST(ModelWeights, ConfigDisagreeingWithTensorsIsAnError) {
  test::tiny_spec s;
  const auto w = test::make_tiny_weights(s);
  const std::string dir = test::write_tiny_hf(test::scratch_dir("cfg"), s, w);
  auto cfg = test::tiny_hf_config(s, "float32");
  cfg["intermediate_size"] = 50;
  std::ofstream(dir + "/config.json") << cfg.dump();
  EXPECT_NE(load_error(dir).find("expected [50, 32]"), std::string::npos);
}

TEST(ModelWeights, CorruptedSafetensorsIsAFormatError) {
  test::tiny_spec s;
  const std::string dir = test::write_tiny_hf(test::scratch_dir("corrupt"), s, test::make_tiny_weights(s));
  const std::string file = dir + "/model.safetensors";
  std::filesystem::resize_file(file, std::filesystem::file_size(file) / 2);  // truncated
  EXPECT_THROW(load_model(dir, k_no_tokenizer), format_error);
  {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    const uint64_t huge = ~0ull >> 4;  // header length far beyond the file
    f.write(reinterpret_cast<const char*>(&huge), 8);
  }
  EXPECT_THROW(load_model(dir, k_no_tokenizer), format_error);
}

TEST(ModelWeights, TinyGgufLoadsAndCorruptionIsAFormatError) {
  test::tiny_spec s;
  const std::string dir = test::scratch_dir("gguf_bind");
  test::write_tiny_gguf(dir + "/t.gguf", s, test::make_tiny_weights(s), "llama");
  const model m = load_model(dir + "/t.gguf", k_no_tokenizer);
  EXPECT_EQ(m.config().arch, model_arch::llama);
  EXPECT_EQ(m.weights().layers[0].wq.name, "blk.0.attn_q.weight");
  std::filesystem::resize_file(dir + "/t.gguf", 200);
  EXPECT_THROW(load_model(dir + "/t.gguf", k_no_tokenizer), format_error);
}

TEST(ModelWeights, HfFolderWithTokenizerAndGenerationConfig) {
  test::tiny_spec s;
  const std::string dir = test::write_tiny_hf(test::scratch_dir("with_tok"), s, test::make_tiny_weights(s));
  test::write_tiny_tokenizer(dir);
  std::ofstream(dir + "/generation_config.json") << R"({"eos_token_id": [2, 9]})";
  const model m = load_model(dir);
  ASSERT_TRUE(m.has_tokenizer());
  EXPECT_EQ(m.tokenizer().encode("ab C"), (std::vector<int32_t>{4, 5, 3, 32}));
  EXPECT_EQ(m.config().eos_ids, (std::vector<int32_t>{2, 9}));
  EXPECT_NE(std::find(m.stop_ids().begin(), m.stop_ids().end(), 9), m.stop_ids().end());

  std::ofstream(dir + "/generation_config.json") << R"({"eos_token_id": 640})";
  EXPECT_NE(load_error(dir).find("640"), std::string::npos);
}

TEST(ModelWeights, MissingPathsAreFormatErrors) {
  EXPECT_THROW(load_model("/nonexistent/model.gguf"), format_error);
  const std::string empty = test::scratch_dir("empty_folder");
  EXPECT_THROW(load_model(empty), format_error);  // no config.json
}

TEST(ModelWeights, RealModelLoadsWithTokenizer) {
  DSPARK_REQUIRE_MODEL(path);
  const model m = load_model(path);
  ASSERT_TRUE(m.has_tokenizer());
  EXPECT_EQ(m.weights().token_embd.type, dtype::q8_0);
  EXPECT_EQ(m.weights().layers[29].w_down.type, dtype::q4_1);
  EXPECT_NE(std::find(m.stop_ids().begin(), m.stop_ids().end(), 2), m.stop_ids().end());
  EXPECT_EQ(m.tokenizer().encode("Hello"), (std::vector<int32_t>{19556}));
}

}  // namespace
}  // namespace dspark

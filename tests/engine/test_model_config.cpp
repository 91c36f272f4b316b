// model_config from the real GGUF and from config.json variants; unsupported architectures
// and bad values give format_error naming the problem.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/arch/model_config.h"
#include "models/formats/gguf.h"
#include "tests/test_support.h"

namespace dspark {
namespace {

TEST(ModelConfig, FromRealGguf) {
  DSPARK_REQUIRE_MODEL(path);
  const model_config c = config_from_gguf(gguf_file::open(path));
  EXPECT_EQ(c.arch, model_arch::llama);
  EXPECT_EQ(c.n_vocab, 49152);
  EXPECT_EQ(c.n_embd, 576);
  EXPECT_EQ(c.n_layer, 30);
  EXPECT_EQ(c.n_head, 9);
  EXPECT_EQ(c.n_head_kv, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.n_rot, 64);
  EXPECT_EQ(c.n_ff, 1536);
  EXPECT_EQ(c.n_ctx_train, 8192);
  EXPECT_DOUBLE_EQ(c.rope_theta, 100000.0);
  EXPECT_NEAR(c.rms_eps, 1e-5, 1e-12);
  EXPECT_EQ(c.rope, rope_style::normal);  // GGUF llama: permuted Q/K
  EXPECT_FALSE(c.rope_scaling.has_value());
  EXPECT_TRUE(c.rope_freq_factors.empty());
  EXPECT_TRUE(c.tied_embeddings);  // no output.weight
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_FALSE(c.qk_norm);
  EXPECT_EQ(c.bos_id, 1);
  EXPECT_EQ(c.eos_ids, std::vector<int32_t>{2});
}

nlohmann::json base_hf(const std::string& arch) {
  return {{"architectures", {arch}},
          {"vocab_size", 1000},
          {"hidden_size", 64},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 8},
          {"num_key_value_heads", 2},
          {"intermediate_size", 128},
          {"max_position_embeddings", 2048},
          {"rope_theta", 500000.0},
          {"rms_norm_eps", 1e-6},
          {"torch_dtype", "bfloat16"},
          {"bos_token_id", 1},
          {"eos_token_id", {2, 7}}};
}

TEST(ModelConfig, FromHfLlama) {
  const model_config c = config_from_hf(base_hf("LlamaForCausalLM"));
  EXPECT_EQ(c.arch, model_arch::llama);
  EXPECT_EQ(c.head_dim, 8);  // hidden_size / heads when head_dim is absent
  EXPECT_EQ(c.kv_dim(), 16);
  EXPECT_EQ(c.rope, rope_style::neox);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_FALSE(c.tied_embeddings);
  EXPECT_EQ(c.eos_ids, (std::vector<int32_t>{2, 7}));
  EXPECT_EQ(c.bos_id, 1);
}

TEST(ModelConfig, FromHfQwenVariants) {
  auto j = base_hf("Qwen2ForCausalLM");
  j["tie_word_embeddings"] = true;
  model_config c = config_from_hf(j);
  EXPECT_EQ(c.arch, model_arch::qwen2);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.tied_embeddings);
  EXPECT_FALSE(c.qk_norm);

  j = base_hf("Qwen3ForCausalLM");
  j["head_dim"] = 16;  // Qwen3: head_dim != hidden_size / heads
  c = config_from_hf(j);
  EXPECT_EQ(c.arch, model_arch::qwen3);
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.q_dim(), 128);

  EXPECT_EQ(config_from_hf(base_hf("MistralForCausalLM")).arch, model_arch::mistral);
}

TEST(ModelConfig, Llama3RopeScaling) {
  auto j = base_hf("LlamaForCausalLM");
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  const model_config c = config_from_hf(j);
  ASSERT_TRUE(c.rope_scaling.has_value());
  EXPECT_FLOAT_EQ(c.rope_scaling->factor, 8.0f);
  EXPECT_FLOAT_EQ(c.rope_scaling->high_freq_factor, 4.0f);
  EXPECT_EQ(c.rope_scaling->original_max_positions, 8192);
}

void expect_format_error(const nlohmann::json& j, const std::vector<std::string>& fragments) {
  try {
    config_from_hf(j);
    ADD_FAILURE() << "accepted " << j.dump();
  } catch (const format_error& e) {
    for (const auto& f : fragments)
      EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what() << " lacks " << f;
  }
}

TEST(ModelConfig, UnknownArchitectureNamesItAndTheSupportedOnes) {
  expect_format_error(base_hf("GPT2LMHeadModel"),
                      {"GPT2LMHeadModel", "LlamaForCausalLM", "Qwen3ForCausalLM"});
}

TEST(ModelConfig, BadValuesAreFormatErrors) {
  auto j = base_hf("LlamaForCausalLM");
  j["num_key_value_heads"] = 3;  // 8 % 3 != 0
  expect_format_error(j, {"n_head_kv"});
  j = base_hf("LlamaForCausalLM");
  j.erase("hidden_size");
  expect_format_error(j, {"hidden_size"});
  j = base_hf("LlamaForCausalLM");
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  expect_format_error(j, {"yarn"});
  j = base_hf("LlamaForCausalLM");
  j["torch_dtype"] = "int8";
  expect_format_error(j, {"int8"});
  j = base_hf("LlamaForCausalLM");
  j["vocab_size"] = "many";
  expect_format_error(j, {"vocab_size"});
  j = base_hf("LlamaForCausalLM");
  j["eos_token_id"] = 5000;  // outside the vocabulary
  expect_format_error(j, {"eos id 5000"});
}

}  // namespace
}  // namespace dspark

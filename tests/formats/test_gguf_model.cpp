// The default model (SmolLM2-135M-Instruct Q4_1) read by our GGUF reader, checked against what
// gguf-py's GGUFReader + dequantize read from the same file
// (tests/formats/data/smollm2_reference.json, made by scripts/make_dequant_vectors.py).
// Skips when the model is absent (DSPARK_REQUIRE_MODEL) or is a different file.
#include <cmath>

#include "common/error.h"
#include "models/formats/gguf.h"
#include "tests/formats/format_test_util.h"

namespace dspark {
namespace {

class GgufModel : public ::testing::Test {
 protected:
  static nlohmann::json reference() {
    return test::read_json(test::data_path("formats/data/smollm2_reference.json"));
  }
};

#define REQUIRE_REFERENCE_MODEL(path, ref)                                                   \
  DSPARK_REQUIRE_MODEL(path);                                                                \
  const nlohmann::json ref = reference();                                                    \
  if (std::filesystem::file_size(path) != ref["file_size"].get<uint64_t>())                  \
    GTEST_SKIP() << path << " is not the model the reference fixture was made from";

TEST_F(GgufModel, MetadataMatchesGgufPy) {
  REQUIRE_REFERENCE_MODEL(path, ref);
  const gguf_file f = gguf_file::open(path);
  EXPECT_EQ(f.version(), ref["version"].get<uint32_t>());
  EXPECT_EQ(f.metadata().size(), ref["kv_count"].get<size_t>());

  // The values the engine depends on, spelled out.
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("llama.block_count"), 30);
  EXPECT_EQ(f.get_int("llama.attention.head_count"), 9);
  EXPECT_EQ(f.get_int("llama.attention.head_count_kv"), 3);
  EXPECT_EQ(f.get_int("llama.embedding_length"), 576);
  ASSERT_NE(f.get_strings("tokenizer.ggml.tokens"), nullptr);
  EXPECT_EQ(f.get_strings("tokenizer.ggml.tokens")->size(), 49152u);
  ASSERT_NE(f.get_strings("tokenizer.ggml.merges"), nullptr);
  EXPECT_EQ(f.get_strings("tokenizer.ggml.merges")->size(), 48900u);

  // Every scalar as gguf-py read it.
  for (const auto& [key, want] : ref["scalars"].items()) {
    SCOPED_TRACE(key);
    const gguf_value* v = f.find(key);
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(static_cast<int>(v->type), want["type"].get<int>());
    const auto& value = want["value"];
    if (value.is_string()) {
      EXPECT_EQ(f.get_string(key), value.get<std::string>());
    } else if (value.is_boolean()) {
      EXPECT_EQ(f.get_bool(key), value.get<bool>());
    } else if (value.is_number_float()) {
      EXPECT_EQ(f.get_float(key), value.get<double>());
    } else {
      EXPECT_EQ(f.get_int(key), value.get<int64_t>());
    }
  }
  // Arrays: length and sampled items.
  for (const auto& [key, want] : ref["arrays"].items()) {
    SCOPED_TRACE(key);
    const gguf_value* v = f.find(key);
    ASSERT_NE(v, nullptr);
    ASSERT_EQ(v->type, gguf_type::array);
    EXPECT_EQ(static_cast<int>(v->array_type), want["elem_type"].get<int>());
    for (const auto& [idx, item] : want["items"].items()) {
      const size_t i = std::stoul(idx);
      if (item.is_string()) {
        ASSERT_LT(i, v->strings.size());
        EXPECT_EQ(v->strings[i], item.get<std::string>());
      } else {
        ASSERT_LT(i, v->integers.size());
        EXPECT_EQ(v->integers[i], item.get<int64_t>());
      }
    }
    const size_t n = v->strings.size() + v->integers.size() + v->reals.size();
    EXPECT_EQ(n, want["length"].get<size_t>());
  }
}

TEST_F(GgufModel, TensorTableMatchesGgufPy) {
  REQUIRE_REFERENCE_MODEL(path, ref);
  const gguf_file f = gguf_file::open(path);
  ASSERT_EQ(f.tensors().size(), ref["tensor_count"].get<size_t>());
  ASSERT_EQ(f.tensors().size(), ref["tensors"].size());
  // Absolute offsets are compared through the distance to the first tensor's data.
  const tensor_view* first = f.find_tensor(ref["tensors"][0]["name"].get<std::string>());
  ASSERT_NE(first, nullptr);
  const size_t first_off = ref["tensors"][0]["file_offset"];
  for (const auto& want : ref["tensors"]) {
    const std::string name = want["name"];
    SCOPED_TRACE(name);
    const tensor_view* t = f.find_tensor(name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(static_cast<uint32_t>(t->type), want["ggml_type"].get<uint32_t>());
    EXPECT_EQ(t->shape, want["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(t->n_bytes, want["n_bytes"].get<size_t>());
    EXPECT_EQ(t->data - first->data,
              static_cast<ptrdiff_t>(want["file_offset"].get<size_t>() - first_off));
  }
  EXPECT_EQ(f.find_tensor("token_embd.weight")->shape, (std::vector<int64_t>{49152, 576}));
}

TEST_F(GgufModel, DequantizedRowsAndSumsMatchGgufPy) {
  REQUIRE_REFERENCE_MODEL(path, ref);
  const gguf_file f = gguf_file::open(path);
  for (const auto& want : ref["rows"]) {
    const std::string name = want["tensor"];
    const int64_t r = want["row"];
    SCOPED_TRACE(name + " row " + std::to_string(r));
    const tensor_view* t = f.find_tensor(name);
    ASSERT_NE(t, nullptr);
    const std::vector<float> expect = test::floats_from_hex(want["expected_f32"]);
    ASSERT_EQ(static_cast<int64_t>(expect.size()), t->row_length());
    std::vector<float> got(expect.size());
    dequantize_row(t->type, t->row(r), got.data(), t->row_length());
    for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(got[i], expect[i]) << "column " << i;
  }
  // Whole tensors: float64 sums of every element (summation order may differ from numpy's
  // pairwise sum, hence the relative tolerance).
  for (const auto& [name, sum] : ref["sums"].items()) {
    SCOPED_TRACE(name);
    const tensor_view* t = f.find_tensor(name);
    ASSERT_NE(t, nullptr);
    std::vector<float> row(static_cast<size_t>(t->row_length()));
    double total = 0.0;
    for (int64_t r = 0; r < t->n_rows(); ++r) {
      dequantize_row(t->type, t->row(r), row.data(), t->row_length());
      for (float x : row) total += x;
    }
    EXPECT_NEAR(total, sum.get<double>(), 1e-9 * (1.0 + std::fabs(sum.get<double>())));
  }
}

}  // namespace
}  // namespace dspark

// safetensors reader: a file written by the `safetensors` package (tests/formats/data), files
// and model folders (single and sharded) written by the tests, and malformed input.
#include "common/error.h"
#include "models/formats/fp16.h"
#include "models/formats/safetensors.h"
#include "tests/formats/format_test_util.h"

namespace dspark {
namespace {

using test::safetensors_builder;

std::vector<float> values_of(const tensor_view& t) {
  std::vector<float> v(static_cast<size_t>(t.n_elements()));
  dequantize_row(t.type, t.data, v.data(), t.n_elements());
  return v;
}

TEST(Safetensors, ReadsFileWrittenBySafetensorsPackage) {
  const auto fixture = test::read_json(test::data_path("formats/data/tiny_safetensors.json"));
  const safetensors_file f =
      safetensors_file::open(test::data_path("formats/data/tiny.safetensors"));
  EXPECT_EQ(f.metadata().at("format"), "np");
  EXPECT_EQ(f.metadata().at("note"), "tiny");
  ASSERT_EQ(f.tensors().size(), fixture["tensors"].size());
  for (const auto& want : fixture["tensors"]) {
    const std::string name = want["name"];
    SCOPED_TRACE(name);
    const tensor_view* t = f.find_tensor(name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->type, want["dtype"] == "F32" ? dtype::f32 : dtype::f16);
    EXPECT_EQ(t->shape, want["shape"].get<std::vector<int64_t>>());
    const std::vector<float> expect = test::floats_from_hex(want["expected_f32"]);
    EXPECT_EQ(values_of(*t), expect);
  }
  EXPECT_EQ(f.find_tensor("scalar")->shape.size(), 0u);
  EXPECT_EQ(f.find_tensor("missing"), nullptr);
}

TEST(Safetensors, SingleFileRoundTripAllDtypes) {
  safetensors_builder b;
  b.add("a", "F32", {2, 3}, test::bytes_of(std::vector<float>{1, 2, 3, 4, 5, -6.5f}));
  b.add("b", "F16", {4}, test::bytes_of(std::vector<uint16_t>{0x3c00, 0xc000, 0x3800, 0x7bff}));
  b.add("c", "BF16", {1, 2}, test::bytes_of(std::vector<uint16_t>{0x3f80, 0xc0a0}));
  b.add("empty", "F32", {0, 5}, "");
  b.header["__metadata__"] = {{"k", "v"}};
  test::scratch_dir dir;
  // A 3-byte header pad makes the data section unaligned: values must still read correctly.
  test::write_file(dir.file("m.safetensors"), b.build_with_header(b.header.dump() + "   "));
  const safetensors_file f = safetensors_file::open(dir.file("m.safetensors"));
  EXPECT_EQ(f.metadata().at("k"), "v");
  ASSERT_EQ(f.tensors().size(), 4u);
  const tensor_view* a = f.find_tensor("a");
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a->n_rows(), 2);
  EXPECT_EQ(values_of(*a), (std::vector<float>{1, 2, 3, 4, 5, -6.5f}));
  EXPECT_EQ(values_of(*f.find_tensor("b")), (std::vector<float>{1.0f, -2.0f, 0.5f, 65504.0f}));
  EXPECT_EQ(values_of(*f.find_tensor("c")), (std::vector<float>{1.0f, -5.0f}));
  EXPECT_EQ(f.find_tensor("empty")->n_bytes, 0u);
}

// Writes a model folder with config.json and the given shards (file name -> builder).
void write_folder(const test::scratch_dir& dir, const std::string& config,
                  const std::vector<std::pair<std::string, safetensors_builder>>& shards) {
  test::write_file(dir.file("config.json"), config);
  for (const auto& [name, b] : shards) test::write_file(dir.file(name), b.build());
}

std::string index_json(const std::vector<std::pair<std::string, std::string>>& map) {
  nlohmann::json j;
  j["metadata"] = {{"total_size", 0}};
  j["weight_map"] = nlohmann::json::object();
  for (const auto& [t, s] : map) j["weight_map"][t] = s;
  return j.dump();
}

TEST(Safetensors, FolderWithSingleFile) {
  test::scratch_dir dir;
  safetensors_builder b;
  b.add("w", "F32", {2}, test::bytes_of(std::vector<float>{3, 4}));
  write_folder(dir, R"({"hidden_size": 64, "model_type": "llama"})", {{"model.safetensors", b}});
  const safetensors_folder f = safetensors_folder::open(dir.path().string());
  EXPECT_EQ(f.config()["hidden_size"], 64);
  EXPECT_EQ(f.config()["model_type"], "llama");
  ASSERT_EQ(f.tensors().size(), 1u);
  EXPECT_EQ(values_of(*f.find_tensor("w")), (std::vector<float>{3, 4}));
}

TEST(Safetensors, ShardedFolderWithIndex) {
  test::scratch_dir dir;
  safetensors_builder s1, s2;
  s1.add("layer.0", "F32", {2}, test::bytes_of(std::vector<float>{1, 2}));
  s1.add("layer.1", "F16", {1}, test::bytes_of(std::vector<uint16_t>{0x4200}));
  s2.add("head", "BF16", {2}, test::bytes_of(std::vector<uint16_t>{0x4000, 0x4040}));
  write_folder(dir, R"({"n": 1})", {{"a-00001.safetensors", s1}, {"a-00002.safetensors", s2}});
  test::write_file(dir.file("model.safetensors.index.json"),
                   index_json({{"layer.0", "a-00001.safetensors"},
                               {"layer.1", "a-00001.safetensors"},
                               {"head", "a-00002.safetensors"}}));
  const safetensors_folder f = safetensors_folder::open(dir.path().string());
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(values_of(*f.find_tensor("layer.0")), (std::vector<float>{1, 2}));
  EXPECT_EQ(values_of(*f.find_tensor("layer.1")), (std::vector<float>{3}));
  EXPECT_EQ(values_of(*f.find_tensor("head")), (std::vector<float>{2, 3}));
  EXPECT_EQ(f.find_tensor("nope"), nullptr);
  // A copy must keep working after the original is gone (its index points into its own shards).
  std::unique_ptr<safetensors_folder> orig = std::make_unique<safetensors_folder>(f);
  const safetensors_folder copy = *orig;
  orig.reset();
  EXPECT_EQ(values_of(*copy.find_tensor("head")), (std::vector<float>{2, 3}));
}

// Writes a single file from `bytes` and expects a format_error mentioning `needle`.
void expect_file_rejected(const std::string& bytes, const std::string& needle) {
  test::scratch_dir dir;
  test::write_file(dir.file("bad.safetensors"), bytes);
  try {
    safetensors_file::open(dir.file("bad.safetensors"));
    ADD_FAILURE() << "accepted a malformed file (expected: " << needle << ")";
  } catch (const format_error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' does not mention '" << needle << "'";
  }
}

TEST(Safetensors, RejectsMalformedFiles) {
  safetensors_builder ok;
  ok.add("a", "F32", {2, 2}, std::string(16, '\0'));
  ok.add("b", "F16", {3}, std::string(6, '\0'));
  const std::string good = ok.build();
  expect_file_rejected("", "too short");
  expect_file_rejected(good.substr(0, 7), "too short");
  for (size_t n = 8; n < good.size(); ++n) {  // every truncation
    expect_file_rejected(good.substr(0, n), "");
  }
  std::string huge = good;
  const uint64_t big = uint64_t{1} << 40;
  std::memcpy(huge.data(), &big, 8);
  expect_file_rejected(huge, "header length 1099511627776");
  expect_file_rejected(ok.build_with_header("{\"a\": [1, 2"), "not valid JSON");
  expect_file_rejected(ok.build_with_header("[1, 2]"), "not a JSON object");

  auto with_entry = [&](const nlohmann::json& entry) {
    safetensors_builder b = ok;
    b.header["a"] = entry;
    return b.build();
  };
  using nlohmann::json;
  expect_file_rejected(with_entry({{"dtype", "I64"}, {"shape", {2}}, {"data_offsets", {0, 16}}}),
                       "unsupported dtype 'I64'");
  expect_file_rejected(with_entry({{"dtype", "F32"}, {"shape", {2, -2}},
                                   {"data_offsets", {0, 16}}}), "non-negative integer");
  expect_file_rejected(with_entry({{"dtype", "F32"}, {"shape", {2, 3}},
                                   {"data_offsets", {0, 16}}}), "shape and dtype need 24");
  expect_file_rejected(with_entry({{"dtype", "F32"}, {"shape", {2}},
                                   {"data_offsets", {12, 20}}}), "overlap");  // b is [16, 22)
  expect_file_rejected(with_entry({{"dtype", "F32"}, {"shape", {2, 2}},
                                   {"data_offsets", {100, 116}}}), "data_offsets[0] = 100");
  expect_file_rejected(with_entry({{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {4, 0}}}),
                       "end before begin");
  expect_file_rejected(with_entry({{"dtype", "F32"}, {"shape", {uint64_t{1} << 40,
                                                                 uint64_t{1} << 40}},
                                   {"data_offsets", {0, 16}}}), "overflows");
  expect_file_rejected(with_entry({{"dtype", "F32"}, {"shape", {4}}}), "data_offsets");
  expect_file_rejected(with_entry("just a string"), "not an object");
  safetensors_builder bad_meta = ok;
  bad_meta.header["__metadata__"] = {{"k", 3}};
  expect_file_rejected(bad_meta.build(), "__metadata__");
}

// Expects safetensors_folder::open(dir) to throw a format_error mentioning `needle`.
void expect_folder_rejected(const test::scratch_dir& dir, const std::string& needle) {
  try {
    safetensors_folder::open(dir.path().string());
    ADD_FAILURE() << "accepted a malformed folder (expected: " << needle << ")";
  } catch (const format_error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' does not mention '" << needle << "'";
  }
}

TEST(Safetensors, RejectsMalformedFolders) {
  safetensors_builder s1, s2;
  s1.add("x", "F32", {1}, std::string(4, '\0'));
  s2.add("y", "F32", {1}, std::string(4, '\0'));
  {
    test::scratch_dir dir;  // no config.json
    test::write_file(dir.file("model.safetensors"), s1.build());
    expect_folder_rejected(dir, "config.json");
  }
  {
    test::scratch_dir dir;
    write_folder(dir, "{not json", {{"model.safetensors", s1}});
    expect_folder_rejected(dir, "not valid JSON");
  }
  {
    test::scratch_dir dir;  // no weights at all
    write_folder(dir, "{}", {});
    expect_folder_rejected(dir, "model.safetensors");
  }
  {
    test::scratch_dir dir;
    write_folder(dir, "{}", {{"s1.safetensors", s1}});
    test::write_file(dir.file("model.safetensors.index.json"),
                     index_json({{"x", "s1.safetensors"}, {"y", "s2.safetensors"}}));
    expect_folder_rejected(dir, "shard 's2.safetensors' named by the index is missing");
  }
  {
    test::scratch_dir dir;  // the same tensor in two shards
    write_folder(dir, "{}", {{"s1.safetensors", s1}, {"s2.safetensors", s1}});
    test::write_file(dir.file("model.safetensors.index.json"),
                     index_json({{"x", "s1.safetensors"}, {"z", "s2.safetensors"}}));
    expect_folder_rejected(dir, "more than one shard");
  }
  {
    test::scratch_dir dir;  // index names the wrong shard
    write_folder(dir, "{}", {{"s1.safetensors", s1}, {"s2.safetensors", s2}});
    test::write_file(dir.file("model.safetensors.index.json"),
                     index_json({{"x", "s2.safetensors"}, {"y", "s1.safetensors"}}));
    expect_folder_rejected(dir, "does not contain it");
  }
  {
    test::scratch_dir dir;  // shard names must not leave the folder
    write_folder(dir, "{}", {{"s1.safetensors", s1}});
    test::write_file(dir.file("model.safetensors.index.json"),
                     index_json({{"x", "../s1.safetensors"}}));
    expect_folder_rejected(dir, "not a plain file name");
  }
  {
    test::scratch_dir dir;
    write_folder(dir, "{}", {{"s1.safetensors", s1}});
    test::write_file(dir.file("model.safetensors.index.json"), R"({"weight_map": 3})");
    expect_folder_rejected(dir, "weight_map");
  }
}

}  // namespace
}  // namespace dspark

// GGUF reader: files written by gguf-py's GGUFWriter (tests/formats/data/tiny.gguf) and by the
// spec-level builder in format_test_util.h, read back and checked against literals and gguf-py's
// own reading; then the metadata accessors' type rules.
#include "common/error.h"
#include "models/formats/gguf.h"
#include "tests/formats/format_test_util.h"

namespace dspark {
namespace {

using test::gguf_builder;

TEST(Gguf, ReadsTinyFileWrittenByGgufPy) {
  const std::string path = test::data_path("formats/data/tiny.gguf");
  const auto fixture = test::read_json(test::data_path("formats/data/tiny_gguf.json"));
  const gguf_file f = gguf_file::open(path);
  EXPECT_EQ(f.version(), 3u);

  // Metadata: the literals scripts/make_dequant_vectors.py wrote.
  EXPECT_EQ(f.get_string("general.architecture"), "tiny");
  EXPECT_EQ(f.get_int("general.alignment"), 64);
  EXPECT_EQ(f.get_int("t.u8"), 250);
  EXPECT_EQ(f.get_int("t.i8"), -100);
  EXPECT_EQ(f.get_int("t.u16"), 65000);
  EXPECT_EQ(f.get_int("t.i16"), -32000);
  EXPECT_EQ(f.get_int("t.u32"), 4000000000LL);
  EXPECT_EQ(f.get_int("t.i32"), -2000000000LL);
  EXPECT_EQ(f.get_float("t.f32"), 0.15625);
  EXPECT_EQ(f.get_int("t.u64"), int64_t{1} << 40);
  EXPECT_EQ(f.get_int("t.i64"), -(int64_t{1} << 50));
  EXPECT_EQ(f.get_float("t.f64"), -2.5e-300);
  EXPECT_EQ(f.get_bool("t.bool"), true);
  EXPECT_EQ(f.get_string("t.string"), "h\xc3\xa9llo w\xc3\xb6rld");
  EXPECT_EQ(*f.get_ints("t.arr_u8"), (std::vector<int64_t>{1, 2, 255}));
  EXPECT_EQ(*f.get_ints("t.arr_i16"), (std::vector<int64_t>{-1, 2, -300}));
  EXPECT_EQ(*f.get_ints("t.arr_i32"), (std::vector<int64_t>{7, -8, 9, 10}));
  EXPECT_EQ(*f.get_ints("t.arr_u64"), (std::vector<int64_t>{int64_t{1} << 62, 3}));
  EXPECT_EQ(*f.get_floats("t.arr_f32"), (std::vector<double>{0.5, -1.25, 3.0}));
  EXPECT_EQ(*f.get_floats("t.arr_f64"), (std::vector<double>{1e100, -0.1}));
  EXPECT_EQ(*f.get_ints("t.arr_bool"), (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(*f.get_strings("t.arr_str"), (std::vector<std::string>{"a", "", "zz top"}));
  EXPECT_EQ(f.find("t.arr_str")->array_type, gguf_type::string);
  EXPECT_EQ(f.find("t.u16")->type, gguf_type::u16);

  // Tensors: names, types, shapes, file offsets and values as gguf-py read them.
  const std::string bytes = test::read_file(path);
  const auto* base = reinterpret_cast<const uint8_t*>(bytes.data());
  ASSERT_EQ(f.tensors().size(), fixture["tensors"].size());
  for (const auto& want : fixture["tensors"]) {
    const std::string name = want["name"];
    SCOPED_TRACE(name);
    const tensor_view* t = f.find_tensor(name);
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(static_cast<uint32_t>(t->type), want["ggml_type"].get<uint32_t>());
    EXPECT_EQ(t->shape, want["shape"].get<std::vector<int64_t>>());
    EXPECT_EQ(t->n_bytes, want["n_bytes"].get<size_t>());
    // Same bytes as at the absolute offset gguf-py found (the view points into our own mapping).
    const size_t off = want["file_offset"];
    ASSERT_LE(off + t->n_bytes, bytes.size());
    EXPECT_EQ(std::memcmp(t->data, base + off, t->n_bytes), 0);
    const std::vector<float> expect = test::floats_from_hex(want["expected_f32"]);
    ASSERT_EQ(static_cast<int64_t>(expect.size()), t->n_elements());
    std::vector<float> got(expect.size());
    for (int64_t r = 0; r < t->n_rows(); ++r) {
      dequantize_row(t->type, t->row(r), got.data() + r * t->row_length(), t->row_length());
    }
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_TRUE(test::float_bits(got[i]) == test::float_bits(expect[i]) ||
                  (std::isnan(got[i]) && std::isnan(expect[i])))
          << "element " << i << ": " << got[i] << " vs " << expect[i];
    }
  }
  EXPECT_EQ(f.find_tensor("nope"), nullptr);
}

TEST(Gguf, BuiltFileRoundTripsEveryValueTypeV2AndV3) {
  for (uint32_t version : {2u, 3u}) {
    SCOPED_TRACE(version);
    gguf_builder b;
    b.version = version;
    b.kv<uint8_t>("u8", 0, 7);
    b.kv<int8_t>("i8", 1, -7);
    b.kv<uint16_t>("u16", 2, 700);
    b.kv<int16_t>("i16", 3, -700);
    b.kv<uint32_t>("u32", 4, 70000);
    b.kv<int32_t>("i32", 5, -70000);
    b.kv<float>("f32", 6, 1.5f);
    b.kv<uint8_t>("bool", 7, 1);
    b.kv_string("str", "abc");
    b.kv<uint64_t>("u64", 10, 1ull << 33);
    b.kv<int64_t>("i64", 11, -(1ll << 33));
    b.kv<double>("f64", 12, 0.25);
    b.kv_array<float>("af32", 6, {1.0f, 2.0f});
    b.kv_array<uint8_t>("abool", 7, {0, 1});
    b.kv_strings("astr", {"x", "yz"});
    b.kv_array<int32_t>("empty", 5, {});
    std::vector<float> w(2 * 8);
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i) - 3.5f;
    b.add_tensor("w", {8, 2}, 0, test::bytes_of(w));
    b.add_tensor("v", {4}, 1, test::bytes_of(std::vector<uint16_t>{0x3c00, 0x4000, 0xc000, 0}));
    test::scratch_dir dir;
    test::write_file(dir.file("a.gguf"), b.build());
    const gguf_file f = gguf_file::open(dir.file("a.gguf"));
    EXPECT_EQ(f.version(), version);
    EXPECT_EQ(f.metadata().size(), 16u);
    EXPECT_EQ(f.get_int("u8"), 7);
    EXPECT_EQ(f.get_int("i16"), -700);
    EXPECT_EQ(f.get_int("u32"), 70000);
    EXPECT_EQ(f.get_float("f32"), 1.5);
    EXPECT_EQ(f.get_float("i32"), -70000.0);  // get_float accepts integers
    EXPECT_EQ(f.get_bool("bool"), true);
    EXPECT_EQ(f.get_string("str"), "abc");
    EXPECT_EQ(f.get_int("u64"), int64_t{1} << 33);
    EXPECT_EQ(f.get_int("i64"), -(int64_t{1} << 33));
    EXPECT_EQ(f.get_float("f64"), 0.25);
    EXPECT_EQ(*f.get_floats("af32"), (std::vector<double>{1.0, 2.0}));
    EXPECT_EQ(*f.get_ints("abool"), (std::vector<int64_t>{0, 1}));
    EXPECT_EQ(*f.get_strings("astr"), (std::vector<std::string>{"x", "yz"}));
    EXPECT_TRUE(f.get_ints("empty")->empty());
    const tensor_view* t = f.find_tensor("w");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->shape, (std::vector<int64_t>{2, 8}));  // ne reversed
    EXPECT_EQ(t->n_rows(), 2);
    std::vector<float> row(8);
    dequantize_row(t->type, t->row(1), row.data(), 8);
    EXPECT_EQ(row[0], 4.5f);
    EXPECT_EQ(row[7], 11.5f);
    const tensor_view* v = f.find_tensor("v");
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(v->shape, (std::vector<int64_t>{4}));
    dequantize_row(v->type, v->data, row.data(), 4);
    EXPECT_EQ(row[0], 1.0f);
    EXPECT_EQ(row[1], 2.0f);
    EXPECT_EQ(row[2], -2.0f);
    EXPECT_EQ(row[3], 0.0f);
  }
}

TEST(Gguf, CustomAlignmentAndEmptyTensorList) {
  gguf_builder b;
  b.alignment = 128;
  b.kv<uint32_t>("general.alignment", 4, 128);
  b.add_tensor("a", {32}, 8, std::string(34, '\0'));
  b.add_tensor("b", {32}, 8, std::string(34, '\0'));
  test::scratch_dir dir;
  test::write_file(dir.file("a.gguf"), b.build());
  const gguf_file f = gguf_file::open(dir.file("a.gguf"));
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[1].data - f.tensors()[0].data, 128);

  gguf_builder empty;
  empty.kv_string("general.architecture", "none");
  test::write_file(dir.file("e.gguf"), empty.build());
  EXPECT_TRUE(gguf_file::open(dir.file("e.gguf")).tensors().empty());
}

TEST(Gguf, TypedGettersRejectWrongTypesAndReportAbsence) {
  gguf_builder b;
  b.kv_string("s", "x");
  b.kv<uint32_t>("n", 4, 3);
  b.kv_strings("list", {"a"});
  test::scratch_dir dir;
  test::write_file(dir.file("a.gguf"), b.build());
  const gguf_file f = gguf_file::open(dir.file("a.gguf"));
  EXPECT_FALSE(f.get_int("missing").has_value());
  EXPECT_EQ(f.get_strings("missing"), nullptr);
  EXPECT_THROW(f.get_int("s"), format_error);
  EXPECT_THROW(f.get_string("n"), format_error);
  EXPECT_THROW(f.get_bool("n"), format_error);
  EXPECT_THROW(f.get_float("s"), format_error);
  EXPECT_THROW(f.get_ints("list"), format_error);
  EXPECT_THROW(f.get_floats("n"), format_error);
  EXPECT_THROW(f.get_strings("s"), format_error);
}

}  // namespace
}  // namespace dspark

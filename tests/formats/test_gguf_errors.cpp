// GGUF reader on malformed input: every case must throw format_error (never crash, never
// allocate without bound), and the messages name the offending value.
#include <functional>

#include "common/error.h"
#include "models/formats/gguf.h"
#include "tests/formats/format_test_util.h"

namespace dspark {
namespace {

using test::gguf_builder;

// A small valid file with metadata and three tensors of different types.
gguf_builder valid_builder() {
  gguf_builder b;
  b.kv_string("general.architecture", "llama");
  b.kv<uint32_t>("llama.block_count", 4, 2);
  b.kv_strings("tokenizer.ggml.tokens", {"a", "b", "c"});
  b.add_tensor("f32", {4, 2}, 0, std::string(32, '\x01'));
  b.add_tensor("q8", {32}, 8, std::string(34, '\x02'));
  b.add_tensor("q4k", {256}, 12, std::string(144, '\x03'));
  return b;
}

// Writes `bytes` and expects open() to throw format_error whose message contains `needle`.
void expect_rejected(const std::string& bytes, const std::string& needle = "") {
  test::scratch_dir dir;
  test::write_file(dir.file("bad.gguf"), bytes);
  try {
    gguf_file::open(dir.file("bad.gguf"));
    ADD_FAILURE() << "accepted a malformed file (expected: " << needle << ")";
  } catch (const format_error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' does not mention '" << needle << "'";
  }
}

template <typename T>
std::string patched(std::string s, size_t at, T v) {
  std::memcpy(s.data() + at, &v, sizeof v);
  return s;
}

TEST(Gguf, ValidBaseLoads) {
  test::scratch_dir dir;
  test::write_file(dir.file("ok.gguf"), valid_builder().build());
  EXPECT_EQ(gguf_file::open(dir.file("ok.gguf")).tensors().size(), 3u);
}

TEST(Gguf, RejectsEveryTruncation) {
  const std::string full = valid_builder().build();
  // The last tensor (144 bytes) is followed by 16 bytes of alignment padding, which a reader
  // does not need: every cut shorter than that is invalid, every longer one still valid.
  const size_t needed = full.size() - 16;
  test::scratch_dir dir;
  for (size_t n = 0; n < full.size(); ++n) {
    test::write_file(dir.file("t.gguf"), full.substr(0, n));
    if (n < needed) {
      EXPECT_THROW(gguf_file::open(dir.file("t.gguf")), format_error) << "cut to " << n;
    } else {
      EXPECT_NO_THROW(gguf_file::open(dir.file("t.gguf"))) << "cut to " << n;
    }
  }
}

TEST(Gguf, RejectsBadHeaderFields) {
  const std::string ok = valid_builder().build();
  expect_rejected("", "magic");
  expect_rejected("GGU", "magic");
  expect_rejected(patched<uint32_t>(ok, 0, 0x47475546), "magic");  // "FUGG"
  expect_rejected(patched<uint32_t>(ok, 4, 1), "version 1");
  expect_rejected(patched<uint32_t>(ok, 4, 4), "version 4");
  expect_rejected(patched<uint32_t>(ok, 4, 0x03000000), "version 50331648");  // big-endian file
  expect_rejected(patched<uint64_t>(ok, 8, uint64_t{1} << 60), "tensor count");
  expect_rejected(patched<uint64_t>(ok, 16, ~uint64_t{0}), "metadata count");
  expect_rejected(patched<uint64_t>(ok, 16, 4), "");  // claims one key more than there is
}

TEST(Gguf, RejectsBadMetadata) {
  auto with_kv = [](const std::function<void(gguf_builder&)>& add) {
    gguf_builder b = valid_builder();
    add(b);
    return b.build();
  };
  // Absurd string lengths: key, value, array item.
  {
    gguf_builder b;
    std::string s;
    test::put<uint64_t>(s, uint64_t{1} << 62);
    b.kvs = s + std::string(64, 'x');
    b.n_kv = 1;
    expect_rejected(b.build(), "string length 4611686018427387904");
  }
  expect_rejected(with_kv([](gguf_builder& b) {
    std::string p;
    test::put<uint64_t>(p, ~uint64_t{0});
    b.kv_raw("k", 8, p);
  }), "string length");
  expect_rejected(with_kv([](gguf_builder& b) {
    std::string p;
    test::put<uint32_t>(p, 8);
    test::put<uint64_t>(p, 1);
    test::put<uint64_t>(p, uint64_t{1} << 40);
    b.kv_raw("k", 9, p);
  }), "string length");
  // Absurd array lengths must be rejected before anything is allocated.
  for (uint32_t elem : {0u, 4u, 8u, 12u}) {
    expect_rejected(with_kv([elem](gguf_builder& b) {
      std::string p;
      test::put<uint32_t>(p, elem);
      test::put<uint64_t>(p, uint64_t{1} << 61);
      b.kv_raw("k", 9, p);
    }), "array length 2305843009213693952");
  }
  expect_rejected(with_kv([](gguf_builder& b) { b.kv_raw("k", 13, "xxxxxxxx"); }),
                  "unknown value type 13");
  expect_rejected(with_kv([](gguf_builder& b) {
    std::string p;
    test::put<uint32_t>(p, 9);  // array of arrays
    test::put<uint64_t>(p, 1);
    b.kv_raw("k", 9, p);
  }), "arrays of arrays");
  expect_rejected(with_kv([](gguf_builder& b) {
    std::string p;
    test::put<uint32_t>(p, 77);
    test::put<uint64_t>(p, 1);
    b.kv_raw("k", 9, p);
  }), "unknown value type 77");
  expect_rejected(with_kv([](gguf_builder& b) { b.kv<uint8_t>("k", 7, 2); }), "bool value 2");
  expect_rejected(with_kv([](gguf_builder& b) { b.kv_string("general.architecture", "x"); }),
                  "duplicate metadata key 'general.architecture'");
  for (uint32_t a : {0u, 3u, 48u}) {
    expect_rejected(with_kv([a](gguf_builder& b) { b.kv<uint32_t>("general.alignment", 4, a); }),
                    "general.alignment " + std::to_string(a));
  }
  expect_rejected(with_kv([](gguf_builder& b) { b.kv_string("general.alignment", "32"); }),
                  "general.alignment has type string");
}

TEST(Gguf, RejectsBadTensorInfos) {
  auto with = [](const std::function<void(gguf_builder&)>& change) {
    gguf_builder b = valid_builder();
    change(b);
    return b.build();
  };
  expect_rejected(with([](gguf_builder& b) { b.tensors[1].type = 99; }),
                  "unsupported tensor type id 99");
  expect_rejected(with([](gguf_builder& b) { b.tensors[1].type = 6; }),  // q5_0
                  "unsupported tensor type id 6");
  expect_rejected(with([](gguf_builder& b) { b.tensors[0].ne = {1, 1, 1, 1, 8}; }),
                  "n_dims 5");
  expect_rejected(with([](gguf_builder& b) { b.tensors[0].ne = {4, -2}; }), "negative");
  expect_rejected(with([](gguf_builder& b) {
    b.tensors[0].ne = {int64_t{1} << 32, int64_t{1} << 32};
  }), "overflows");
  expect_rejected(with([](gguf_builder& b) { b.tensors[0].ne = {int64_t{1} << 62, 1}; }),
                  "overflows a byte size");
  expect_rejected(with([](gguf_builder& b) { b.tensors[1].ne = {31}; }),
                  "not a multiple of q8_0's block size 32");
  expect_rejected(with([](gguf_builder& b) { b.tensors[0].ne = {4, 3}; }), "overlap");
  expect_rejected(with([](gguf_builder& b) { b.tensors[2].ne = {512}; }), "outside the data");
  expect_rejected(with([](gguf_builder& b) { b.tensors[2].offset_override = 1 << 20; }),
                  "outside the data");
  expect_rejected(with([](gguf_builder& b) { b.tensors[2].offset_override = int64_t{1} << 62; }),
                  "outside the data");
  expect_rejected(with([](gguf_builder& b) { b.tensors[2].offset_override = 8; }),
                  "not a multiple of the alignment 32");
  expect_rejected(with([](gguf_builder& b) { b.tensors[2].offset_override = 0; }), "overlap");
  expect_rejected(with([](gguf_builder& b) { b.tensors[2].name = "f32"; }),
                  "duplicate tensor name 'f32'");
}

TEST(Gguf, RejectsMissingAndNonRegularFiles) {
  test::scratch_dir dir;
  EXPECT_THROW(gguf_file::open(dir.file("does_not_exist.gguf")), format_error);
  EXPECT_THROW(gguf_file::open(dir.path().string()), format_error);
}

}  // namespace
}  // namespace dspark

// Seeded random-mutation fuzzing of the GGUF and safetensors readers.
//
// Valid files (built here with every metadata value type, arrays, and tensors of every
// supported dtype; and the real model's header when present) are mutated thousands of times:
// bit flips, random bytes, 4/8-byte fields overwritten with boundary values, truncation,
// extension, chunk insertion/deletion, and (safetensors) edits of the JSON header's numbers and
// strings. Each mutant is loaded; the only allowed outcomes are success or format_error. A
// successful load is then exercised (every tensor dequantized, every metadata getter called),
// so a view pointing outside the mapping shows up under ASan/UBSan (`make test-asan`).
// Failures print the seed and iteration, so every case replays.
#include <random>

#include "common/error.h"
#include "models/formats/gguf.h"
#include "models/formats/safetensors.h"
#include "tests/formats/format_test_util.h"

namespace dspark {
namespace {

using rng_t = std::mt19937_64;

uint64_t interesting_value(rng_t& rng, size_t file_size) {
  static const uint64_t values[] = {0, 1, 2, 3, 4, 8, 31, 32, 33, 64, 127, 128, 255, 256,
                                    0x7fff, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff,
                                    uint64_t{1} << 32, uint64_t{1} << 40, uint64_t{1} << 62,
                                    uint64_t{1} << 63, ~uint64_t{0}, ~uint64_t{0} - 1};
  const size_t n = sizeof values / sizeof values[0];
  const uint64_t pick = rng() % (n + 4);
  if (pick < n) return values[pick];
  if (pick == n) return file_size;
  if (pick == n + 1) return file_size + 1;
  if (pick == n + 2) return file_size - 1;
  return rng();
}

// Applies 1-4 random mutations; positions fall in [0, hot_end) with probability 3/4, since
// that is where the structure (header) is, and anywhere otherwise.
std::string mutate(std::string s, rng_t& rng, size_t hot_end) {
  const int n_mutations = 1 + static_cast<int>(rng() % 4);
  for (int m = 0; m < n_mutations; ++m) {
    if (s.empty()) s.push_back(static_cast<char>(rng()));
    const size_t limit = (rng() % 4 != 0) ? std::min(hot_end, s.size()) : s.size();
    const size_t pos = rng() % std::max<size_t>(limit, 1);
    switch (rng() % 8) {
      case 0: s[pos] = static_cast<char>(s[pos] ^ (1 << (rng() % 8))); break;
      case 1: s[pos] = static_cast<char>(rng()); break;
      case 2: {
        const uint32_t v = static_cast<uint32_t>(interesting_value(rng, s.size()));
        if (pos + 4 <= s.size()) std::memcpy(s.data() + pos, &v, 4);
        break;
      }
      case 3: {
        const uint64_t v = interesting_value(rng, s.size());
        if (pos + 8 <= s.size()) std::memcpy(s.data() + pos, &v, 8);
        break;
      }
      case 4: s.resize(rng() % (s.size() + 1)); break;
      case 5: {
        const size_t n = 1 + rng() % 64;
        for (size_t i = 0; i < n; ++i) s.push_back(static_cast<char>(rng()));
        break;
      }
      case 6: s.insert(pos, std::string(1 + rng() % 16, static_cast<char>(rng()))); break;
      default: s.erase(pos, 1 + rng() % 16); break;
    }
  }
  return s;
}

// Touches everything a loaded GGUF file exposes.
void exercise(const gguf_file& f) {
  for (const auto& [key, v] : f.metadata()) {
    try {
      (void)f.get_int(key);
    } catch (const format_error&) {
    }
    try {
      (void)f.get_string(key);
    } catch (const format_error&) {
    }
    try {
      (void)f.get_strings(key);
    } catch (const format_error&) {
    }
  }
  std::vector<float> row;
  for (const tensor_view& t : f.tensors()) {
    ASSERT_LE(t.shape.size(), 4u);
    ASSERT_EQ(t.n_bytes, bytes_for(t.type, t.n_elements()));
    if (t.n_elements() == 0) continue;
    row.resize(static_cast<size_t>(t.row_length()));
    for (int64_t r = 0; r < t.n_rows(); ++r) {
      dequantize_row(t.type, t.row(r), row.data(), t.row_length());
    }
  }
}

void exercise(const safetensors_file& f) {
  std::vector<float> v;
  for (const tensor_view& t : f.tensors()) {
    ASSERT_EQ(t.n_bytes, bytes_for(t.type, t.n_elements()));
    v.resize(static_cast<size_t>(t.n_elements()));
    dequantize_row(t.type, t.data, v.data(), t.n_elements());
  }
}

// A valid GGUF with a key of every value type, arrays of several element types, and a tensor
// of every supported dtype.
std::string seed_gguf(size_t& header_end) {
  test::gguf_builder b;
  b.kv_string("general.architecture", "llama");
  b.kv<uint8_t>("u8", 0, 1);
  b.kv<int8_t>("i8", 1, -1);
  b.kv<uint16_t>("u16", 2, 2);
  b.kv<int16_t>("i16", 3, -2);
  b.kv<uint32_t>("u32", 4, 3);
  b.kv<int32_t>("i32", 5, -3);
  b.kv<float>("f32", 6, 0.5f);
  b.kv<uint8_t>("bool", 7, 1);
  b.kv<uint64_t>("u64", 10, 4);
  b.kv<int64_t>("i64", 11, -4);
  b.kv<double>("f64", 12, 0.25);
  b.kv<uint32_t>("general.alignment", 4, 32);
  b.kv_strings("tokens", {"a", "bc", "def", ""});
  b.kv_array<int32_t>("types", 5, {1, 2, 3, 4});
  b.kv_array<float>("scores", 6, {0.1f, 0.2f});
  b.kv_array<uint8_t>("flags", 7, {1, 0});
  b.kv_array<uint64_t>("big", 10, {5, 6});
  rng_t rng(7);
  auto random_bytes = [&](size_t n) {
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(rng());
    return s;
  };
  // Scales of random bytes may be inf/NaN: fine, dequantization must not care.
  b.add_tensor("t.f32", {4, 2}, 0, random_bytes(32));
  b.add_tensor("t.f16", {8}, 1, random_bytes(16));
  b.add_tensor("t.bf16", {2, 2, 2}, 30, random_bytes(16));
  b.add_tensor("t.q8_0", {32, 2}, 8, random_bytes(68));
  b.add_tensor("t.q4_0", {64}, 2, random_bytes(36));
  b.add_tensor("t.q4_1", {32}, 3, random_bytes(20));
  b.add_tensor("t.q4_k", {256}, 12, random_bytes(144));
  b.add_tensor("t.q6_k", {256, 1, 1, 1}, 14, random_bytes(210));
  const std::string s = b.build();
  // Tensor data (each padded to 32 bytes) fills the tail; the structure is everything before.
  header_end = s.size() - (32 + 32 + 32 + 96 + 64 + 32 + 160 + 224);
  return s;
}

TEST(Fuzz, GgufMutationsLoadOrThrowFormatError) {
  size_t header_end = 0;
  const std::string seed = seed_gguf(header_end);
  test::scratch_dir dir;
  const std::string path = dir.file("f.gguf");
  test::write_file(path, seed);
  exercise(gguf_file::open(path));  // the seed itself is valid

  const uint64_t seed_value = 0x5eed0001;
  rng_t rng(seed_value);
  int n_ok = 0, n_rejected = 0;
  for (int it = 0; it < 3000; ++it) {
    test::write_file(path, mutate(seed, rng, header_end));
    try {
      const gguf_file f = gguf_file::open(path);
      exercise(f);
      ++n_ok;
    } catch (const format_error&) {
      ++n_rejected;
    }
    if (HasFatalFailure()) FAIL() << "seed " << seed_value << " iteration " << it;
  }
  std::printf("gguf fuzz: %d loaded, %d rejected\n", n_ok, n_rejected);
  EXPECT_GT(n_ok, 0);  // the mutations must not all be fatal, or deep paths go untested
  EXPECT_GT(n_rejected, 0);
}

// A mutation of the JSON header's structure: one number or string replaced.
std::string mutate_json_header(const nlohmann::json& header, const std::string& data,
                               rng_t& rng) {
  nlohmann::json h = header;
  std::vector<std::string> names;
  for (const auto& [k, v] : h.items()) names.push_back(k);
  const std::string name = names[rng() % names.size()];
  nlohmann::json& e = h[name];
  if (name != "__metadata__") {
    switch (rng() % 6) {
      case 0: {
        static const char* const dtypes[] = {"F32", "F16", "BF16", "I8", "F64", ""};
        e["dtype"] = dtypes[rng() % 6];
        break;
      }
      case 1: {
        const size_t i = rng() % std::max<size_t>(e["shape"].size(), 1);
        e["shape"][i] = interesting_value(rng, data.size());
        break;
      }
      case 2: e["data_offsets"][rng() % 2] = interesting_value(rng, data.size()); break;
      case 3: e["data_offsets"][rng() % 2] = -static_cast<int64_t>(rng() % 100); break;
      case 4: e["shape"].push_back(rng() % 3); break;
      default: {
        static const char* const fields[] = {"dtype", "shape", "data_offsets"};
        e.erase(fields[rng() % 3]);
        break;
      }
    }
  } else {
    e["x"] = rng() % 2 ? nlohmann::json(3) : nlohmann::json("y");
  }
  test::safetensors_builder b;
  b.data = data;
  return b.build_with_header(h.dump());
}

TEST(Fuzz, SafetensorsMutationsLoadOrThrowFormatError) {
  test::safetensors_builder b;
  rng_t init(11);
  auto random_bytes = [&](size_t n) {
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(init());
    return s;
  };
  b.add("a", "F32", {2, 3}, random_bytes(24));
  b.add("b", "F16", {5}, random_bytes(10));
  b.add("c", "BF16", {2, 1, 2}, random_bytes(8));
  b.add("d", "F32", {}, random_bytes(4));
  b.header["__metadata__"] = {{"format", "pt"}};
  const std::string seed = b.build();
  const size_t header_end = seed.size() - b.data.size();
  test::scratch_dir dir;
  const std::string path = dir.file("f.safetensors");
  test::write_file(path, seed);
  const safetensors_file original = safetensors_file::open(path);
  exercise(original);

  const uint64_t seed_value = 0x5eed0002;
  rng_t rng(seed_value);
  int n_ok = 0, n_rejected = 0;
  for (int it = 0; it < 3000; ++it) {
    const std::string mutant = (rng() % 2 == 0)
                                   ? mutate_json_header(b.header, b.data, rng)
                                   : mutate(seed, rng, header_end);
    test::write_file(path, mutant);
    try {
      exercise(safetensors_file::open(path));
      ++n_ok;
    } catch (const format_error&) {
      ++n_rejected;
    }
    if (HasFatalFailure()) FAIL() << "seed " << seed_value << " iteration " << it;
  }
  std::printf("safetensors fuzz: %d loaded, %d rejected\n", n_ok, n_rejected);
  EXPECT_GT(n_ok, 0);
  EXPECT_GT(n_rejected, 0);
}

// The real model's header (key/values + tensor infos, ~1.8 MB), followed by a sparse hole up
// to the original size so tensor ranges stay valid: mutations land in the first 1 MiB (the
// key/values: strings and the token arrays) or in the tensor infos just before the data.
TEST(Fuzz, RealModelHeaderMutations) {
  DSPARK_REQUIRE_MODEL(model);
  const auto ref = test::read_json(test::data_path("formats/data/smollm2_reference.json"));
  if (std::filesystem::file_size(model) != ref["file_size"].get<uint64_t>()) {
    GTEST_SKIP() << model << " is not the model the reference fixture was made from";
  }
  uint64_t data_start = ~uint64_t{0};
  for (const auto& t : ref["tensors"]) {
    data_start = std::min(data_start, t["file_offset"].get<uint64_t>());
  }
  const uint64_t full_size = ref["file_size"];
  std::string header = test::read_file(model).substr(0, data_start);
  ASSERT_EQ(header.size(), data_start);

  test::scratch_dir dir;
  const std::string path = dir.file("model_header.gguf");
  auto write_sparse = [&](const std::string& bytes) {
    test::write_file(path, bytes);
    if (bytes.size() == header.size()) std::filesystem::resize_file(path, full_size);
  };
  write_sparse(header);
  EXPECT_EQ(gguf_file::open(path).tensors().size(), 272u);

  const uint64_t seed_value = 0x5eed0003;
  rng_t rng(seed_value);
  const size_t kv_region = std::min<size_t>(header.size(), 1 << 20);
  const size_t info_begin = header.size() - 20000;  // 272 tensor infos are ~17 KB
  int n_ok = 0, n_rejected = 0;
  for (int it = 0; it < 200; ++it) {
    std::string mutant = header;
    const int n_mutations = 1 + static_cast<int>(rng() % 3);
    for (int m = 0; m < n_mutations; ++m) {
      const size_t pos = (rng() % 2 == 0) ? rng() % (kv_region - 8)
                                          : info_begin + rng() % (header.size() - info_begin - 8);
      switch (rng() % 4) {
        case 0: mutant[pos] = static_cast<char>(mutant[pos] ^ (1 << (rng() % 8))); break;
        case 1: mutant[pos] = static_cast<char>(rng()); break;
        case 2: {
          const uint32_t v = static_cast<uint32_t>(interesting_value(rng, full_size));
          std::memcpy(mutant.data() + pos, &v, 4);
          break;
        }
        default: {
          const uint64_t v = interesting_value(rng, full_size);
          std::memcpy(mutant.data() + pos, &v, 8);
          break;
        }
      }
    }
    if (rng() % 10 == 0) mutant.resize(rng() % mutant.size());  // truncated, no hole
    write_sparse(mutant);
    try {
      const gguf_file f = gguf_file::open(path);
      for (const tensor_view& t : f.tensors()) {
        ASSERT_EQ(t.n_bytes, bytes_for(t.type, t.n_elements()));
      }
      ++n_ok;
    } catch (const format_error&) {
      ++n_rejected;
    }
    if (HasFatalFailure()) FAIL() << "seed " << seed_value << " iteration " << it;
  }
  std::printf("model header fuzz: %d loaded, %d rejected\n", n_ok, n_rejected);
  EXPECT_GT(n_ok + n_rejected, 0);
}

}  // namespace
}  // namespace dspark

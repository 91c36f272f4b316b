// PyTorch parity: tests/drafters/fixtures/<kind>/ (written by training/make_fixtures.py, see
// docs/drafter-format.md "Parity fixtures") run through the normal loader and the drafters,
// compared with max abs error 1e-4. Skips by name while a kind's fixture is absent.
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include <nlohmann/json.hpp>

#include <gtest/gtest.h>

#include "models/drafters/drafter_config.h"
#include "models/drafters/drafter_weights.h"
#include "models/drafters/dspark_drafter.h"
#include "models/drafters/eagle3_drafter.h"
#include "models/formats/safetensors.h"
#include "tests/test_support.h"

namespace dspark {
namespace {

// case.safetensors holds I32 tensors, which the model reader (F32/F16/BF16) rejects: a small
// reader for F32/I32 test data only.
struct case_file {
  nlohmann::json header;
  std::string bytes;  // the data section

  explicit case_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    uint64_t n = 0;
    in.read(reinterpret_cast<char*>(&n), 8);
    std::string h(n, '\0');
    in.read(h.data(), static_cast<std::streamsize>(n));
    header = nlohmann::json::parse(h);
    bytes.assign(std::istreambuf_iterator<char>(in), {});
  }
  template <class T>
  std::vector<T> get(const std::string& name, const char* dtype) const {
    if (!header.contains(name)) throw std::runtime_error("fixture tensor " + name + " missing");
    const nlohmann::json& t = header[name];
    if (t["dtype"] != dtype) throw std::runtime_error("fixture tensor " + name + " is not " + dtype);
    const size_t b = t["data_offsets"][0], e = t["data_offsets"][1];
    std::vector<T> v((e - b) / sizeof(T));
    std::memcpy(v.data(), bytes.data() + b, e - b);
    return v;
  }
};

std::vector<float> f32(const case_file& f, const std::string& name) { return f.get<float>(name, "F32"); }
std::vector<int32_t> i32(const case_file& f, const std::string& name) { return f.get<int32_t>(name, "I32"); }

double max_err(const float* a, const std::vector<float>& b) {
  double e = 0;
  for (size_t i = 0; i < b.size(); ++i) e = std::max(e, static_cast<double>(std::abs(a[i] - b[i])));
  return e;
}

void commit_rows(drafter& dr, const std::vector<float>& F, int64_t m, int64_t d, int32_t pos0) {
  const int64_t n = static_cast<int64_t>(F.size()) / (m * d);
  std::vector<float> buf(F.size());  // [n][m*d] -> [m][n][d]
  for (int64_t l = 0; l < m; ++l)
    for (int64_t i = 0; i < n; ++i)
      std::copy_n(F.data() + (i * m + l) * d, d, buf.data() + (l * n + i) * d);
  commit_info c;
  c.features_pos0 = pos0;
  c.features = {buf.data(), static_cast<int32_t>(m), static_cast<int32_t>(n), 0, d, n * d};
  dr.on_commit(0, c);
}

void run_fixture(const std::string& kind) {
  const std::string dir = test::source_dir() + "/tests/drafters/fixtures/" + kind;
  if (!std::filesystem::exists(dir + "/drafter.json"))
    GTEST_SKIP() << "no PyTorch fixture at tests/drafters/fixtures/" << kind
                 << " (generate it with training/make_fixtures.py, docs/drafter-format.md)";
  drafter_config c = load_drafter_config(dir);
  drafter_weights w = load_drafter_weights(dir, c);
  const safetensors_file head = safetensors_file::open(dir + "/target_head.safetensors");
  const case_file cs(dir + "/case.safetensors");
  const drafter_target_head th{*head.find_tensor("embed.weight"), *head.find_tensor("lm_head.weight")};
  drafter_runtime_params p;
  p.max_ctx = 512;
  p.n_threads = 1;
  const int64_t m = static_cast<int64_t>(c.target_layers.size()), d = c.target_n_embd, V = c.target_n_vocab;
  const int32_t G = c.block_size;
  draft_batch out(draft_batch_params{1, G, V, draft_dist_kind::dense, 0});
  if (c.block_drafter()) {
    dspark_drafter dr(c, std::move(w), th, p);
    dr.set_record(true);
    dr.begin(0, {});
    int32_t n_ctx = 0;
    for (const char* r : {"r1", "r2"}) {
      const std::string pre = std::string(r) + ".";
      const std::vector<float> F = f32(cs, pre + "features");
      commit_rows(dr, F, m, d, n_ctx);
      n_ctx += static_cast<int32_t>(F.size() / static_cast<size_t>(m * d));
      const std::vector<int32_t> prev = i32(cs, pre + "prev");
      std::vector<int32_t> ctx(static_cast<size_t>(n_ctx), 0);
      ctx.push_back(i32(cs, pre + "anchor")[0]);
      dr.force_prev(prev);
      out.clear();
      propose_request q;
      q.max_drafts = G;
      q.context = ctx;
      dr.propose({&q, 1}, out);
      ASSERT_EQ(out.length(0), G);
      EXPECT_LE(max_err(dr.recorded_base().data(), f32(cs, pre + "base_logits")), 1e-4) << r << " base logits";
      EXPECT_LE(max_err(dr.recorded_logits().data(), f32(cs, pre + "logits")), 1e-4) << r << " logits";
      if (c.confidence)
        EXPECT_LE(max_err(dr.recorded_conf().data(), f32(cs, pre + "conf_logits")), 1e-4) << r << " confidence";
    }
  } else {
    eagle3_drafter dr(c, std::move(w), th, p);
    dr.set_record(true);
    dr.begin(0, {});
    const std::vector<float> F = f32(cs, "features");
    commit_rows(dr, F, m, d, 0);
    // tokens = token(0..P): feature row t pairs with token t + 1; the last is the anchor.
    const std::vector<int32_t> ctx = i32(cs, "tokens");
    dr.force_chain(i32(cs, "chain"));
    propose_request q;
    q.max_drafts = G;
    q.context = ctx;
    dr.propose({&q, 1}, out);
    ASSERT_EQ(out.length(0), G);
    EXPECT_LE(max_err(dr.recorded_logits().data(), f32(cs, "logits")), 1e-4);
  }
}

TEST(DrafterParity, Dspark) { run_fixture("dspark"); }
TEST(DrafterParity, DsparkRnn) { run_fixture("dspark_rnn"); }
TEST(DrafterParity, Dflash) { run_fixture("dflash"); }
TEST(DrafterParity, Eagle3) { run_fixture("eagle3"); }
TEST(DrafterParity, Mtp1) { run_fixture("mtp1"); }

}  // namespace
}  // namespace dspark

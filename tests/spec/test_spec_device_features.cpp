// The decoder's side of device-resident target features (drafter_caps::reads_device_features,
// target_features::device, drafter::before_target_forward): a drafter that reads the captured
// rows where the target keeps them gets, for every position, the same rows as one that reads
// them on the host, provided it reads them before the decoder's next target forward; the
// backend is then asked not to copy them to the host. The "device" here is a backend that keeps
// a copy of the CPU backend's rows and poisons it (NaN) at the start of every forward, as a
// CUDA target rewrites its capture buffer, so a read the decoder let slip past that point shows.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <tuple>
#include <utility>
#include <vector>

#include "engine/generator.h"
#include "engine/spec/policy.h"
#include "engine/spec/spec_decoder.h"
#include "forwarding_backend.h"
#include "tiny_model.h"

namespace dspark {
namespace {

using test::tiny_model;

// Hands the captured rows out in "device memory" (its own buffer, poisoned by the next forward)
// when the batch asks for them there.
class device_capture_backend final : public test::forwarding_backend {
 public:
  using forwarding_backend::forwarding_backend;
  forward_output forward(const forward_batch& b) override {
    std::fill(device_.begin(), device_.end(), std::numeric_limits<float>::quiet_NaN());
    forward_output o = forwarding_backend::forward(b);
    if (o.status != forward_status::ok || o.hidden == nullptr || !b.hidden_on_device) {
      host_only += o.hidden != nullptr;
      return o;
    }
    const size_t n = b.capture_layers.size() * static_cast<size_t>(o.n_hidden_rows * limits().n_embd);
    device_.assign(o.hidden, o.hidden + n);
    o.hidden = nullptr;  // the host copy a CUDA target skips
    o.hidden_device = device_.data();
    o.hidden_device_layer_stride = o.n_hidden_rows * limits().n_embd;
    o.hidden_stream = this;
    ++device_only;
    return o;
  }
  int64_t device_only = 0;  // capturing forwards answered in "device memory" only
  int64_t host_only = 0;    // capturing forwards answered on the host

 private:
  std::vector<float> device_;
};

// Proposes the next (up to) 3 tokens of plain decoding's output, so rounds commit several rows,
// and keeps every feature row it is given by (slot, position). With device features it defers
// the reads to before_target_forward, as the GPU drafters' gather does.
class feature_log_drafter final : public drafter {
 public:
  feature_log_drafter(std::vector<std::vector<int32_t>> prompts, std::vector<std::vector<int32_t>> outputs,
                      bool device)
      : prompts_(std::move(prompts)), outputs_(std::move(outputs)) {
    caps_.name = device ? "log-device" : "log-host";
    caps_.capture_layers = {0, 1};
    caps_.reads_device_features = device;
  }
  const drafter_caps& caps() const override { return caps_; }
  void begin(int32_t slot, std::span<const int32_t> prompt) override {
    for (size_t i = 0; i < prompts_.size(); ++i)
      if (std::equal(prompt.begin(), prompt.end(), prompts_[i].begin(), prompts_[i].end())) which_[slot] = i;
  }
  void propose(std::span<const propose_request> batch, draft_batch& out) override {
    for (const propose_request& r : batch) {
      const size_t q = which_.at(r.slot);
      const size_t done = r.context.size() - prompts_[q].size();
      for (int32_t k = 0; k < std::min(r.max_drafts, 3) && done + k < outputs_[q].size(); ++k)
        out.push_one_hot(r.slot, outputs_[q][done + k]);
    }
  }
  void on_commit(int32_t slot, const commit_info& c) override {
    const target_features& f = c.features;
    if (f.empty()) return;
    ++commits_with_features;
    if (f.data != nullptr) {
      for (int32_t i = 0; i < f.n_rows; ++i)
        for (int32_t l = 0; l < f.n_layers; ++l) keep(slot, c.features_pos0 + i, l, f.row(l, i), f.n_embd);
      return;
    }
    EXPECT_TRUE(caps_.reads_device_features) << "device-only features to a host reader";
    deferred_.push_back({slot, c.features_pos0, f});
  }
  void rollback(int32_t, int32_t) override {}
  void end(int32_t) override {}
  void before_target_forward() override { read_deferred(); }

  void read_deferred() {
    for (const deferred& d : deferred_) {
      const target_features& f = d.f;
      for (int32_t i = 0; i < f.n_rows; ++i)
        for (int32_t l = 0; l < f.n_layers; ++l)
          keep(d.slot, d.pos0 + i, l, f.device + l * f.device_layer_stride + (f.row0 + i) * f.n_embd, f.n_embd);
    }
    deferred_.clear();
  }
  // (slot, position, layer) -> row
  std::map<std::tuple<int32_t, int32_t, int32_t>, std::vector<float>> rows;
  int64_t commits_with_features = 0;

 private:
  struct deferred {
    int32_t slot, pos0;
    target_features f;
  };
  void keep(int32_t slot, int32_t pos, int32_t l, const float* src, int64_t n) {
    rows[{slot, pos, l}] = std::vector<float>(src, src + n);
  }
  drafter_caps caps_;
  std::vector<std::vector<int32_t>> prompts_, outputs_;
  std::map<int32_t, size_t> which_;
  std::vector<deferred> deferred_;
};

TEST(SpecDeviceFeatures, DeferredDeviceReadsSeeTheHostRowsAndSkipTheHostCopy) {
  tiny_model tm(/*n_vocab=*/16, /*n_layer=*/3, /*seed=*/5);
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4, 5}, {7, 3, 9}, {2, 2, 8, 1, 0, 6, 4}};
  sampling_params sp;
  sp.max_tokens = 20;
  std::vector<std::vector<int32_t>> plain;
  {
    cpu_backend be(tm.cfg, tm.w, tiny_model::options(1));
    for (const auto& p : prompts) plain.push_back(generate(be, nullptr, {}, p, sp).token_ids);
  }

  std::map<std::tuple<int32_t, int32_t, int32_t>, std::vector<float>> by_mode[2];
  for (int device = 0; device < 2; ++device) {
    cpu_backend cpu(tm.cfg, tm.w, tiny_model::options(3));
    device_capture_backend be(cpu);
    feature_log_drafter d(prompts, plain, device == 1);
    fixed_gamma_policy pol(3);
    spec_decoder dec(be, &d, pol, nullptr, {}, {.max_requests = 3});
    std::vector<int32_t> ids;
    for (const auto& p : prompts) ids.push_back(dec.add(p, sp));
    dec.run();
    d.read_deferred();  // the last forward's rows (no forward follows to trigger it)
    for (size_t i = 0; i < prompts.size(); ++i)
      EXPECT_EQ(dec.take(ids[i]).gen.token_ids, plain[i]) << "prompt " << i << (device ? " device" : " host");
    EXPECT_GT(d.commits_with_features, 10);
    if (device) {
      EXPECT_GT(be.device_only, 0);
      EXPECT_EQ(be.host_only, 0) << "every capturing forward kept its rows on the device";
    } else {
      EXPECT_EQ(be.device_only, 0);
      EXPECT_GT(be.host_only, 0);
    }
    by_mode[device] = d.rows;
  }
  ASSERT_EQ(by_mode[0].size(), by_mode[1].size());
  // Every prompt position and the rounds' rows: well over the prompts' 15 positions x 2 layers.
  EXPECT_GT(by_mode[0].size(), 60u);
  for (const auto& [key, host_row] : by_mode[0]) {
    const auto it = by_mode[1].find(key);
    ASSERT_NE(it, by_mode[1].end());
    for (size_t j = 0; j < host_row.size(); ++j) {
      ASSERT_FALSE(std::isnan(it->second[j])) << "a device row read after the next forward";
      ASSERT_EQ(it->second[j], host_row[j]);
    }
  }
}

}  // namespace
}  // namespace dspark

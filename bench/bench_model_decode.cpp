// Decode throughput of a real model file at several batch sizes, through the backend
// interface the engine uses: B sequences are prefilled to a context, then plain decode steps
// run (every sequence one token, with its logits copied to the host, as the generator needs);
// each step is timed on the host around forward(), which returns once the logits are on the
// host. Median of --steps steps after 3 warm-up steps.
//
//   bench_model_decode --model PATH [--device cpu|cuda] [--batches 1,8,32,128] [--ctx 512]
//                      [--steps 32] [--bandwidth-gbs G] [--json]
//
// Floor (when --bandwidth-gbs is given, e.g. bench_cuda's measured copy bandwidth): the bytes a
// step must read, the weights in bf16 (every matrix plus the LM head) and the K/V of all B
// contexts, over that bandwidth. Small models at small batches sit far above it: a step is
// then bound by kernel latency, not by memory traffic, and the table says how far.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench_backend.h"
#include "engine/backend.h"
#include "engine/model.h"

namespace {

using namespace dspark;
using clock_type = std::chrono::steady_clock;

struct bench_args {
  std::string model;
  std::string device = "cpu";
  std::vector<int32_t> batches = {1, 8, 32, 128};
  int32_t ctx = 512;
  int32_t steps = 32;
  double bandwidth_gbs = 0.0;
  bool json = false;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "bench_model_decode: %s\nusage: bench_model_decode --model PATH [--device cpu|cuda] "
               "[--batches 1,8,32,128] [--ctx N] [--steps N] [--bandwidth-gbs G] [--json]\n",
               why.c_str());
  std::exit(2);
}

bench_args parse(int argc, char** argv) {
  bench_args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (k == "--json") {
      a.json = true;
      continue;
    }
    if (i + 1 >= argc) usage("option " + k + " needs a value");
    const std::string v = argv[++i];
    if (k == "--model") a.model = v;
    else if (k == "--device") a.device = v;
    else if (k == "--ctx") a.ctx = std::atoi(v.c_str());
    else if (k == "--steps") a.steps = std::atoi(v.c_str());
    else if (k == "--bandwidth-gbs") a.bandwidth_gbs = std::atof(v.c_str());
    else if (k == "--batches") {
      a.batches.clear();
      std::stringstream ss(v);
      for (std::string t; std::getline(ss, t, ',');) a.batches.push_back(std::atoi(t.c_str()));
    } else {
      usage("unknown option " + k);
    }
  }
  if (a.model.empty()) usage("--model is required");
  if (a.device != "cpu" && a.device != "cuda") usage("--device must be cpu or cuda");
  if (a.ctx < 1 || a.steps < 1) usage("--ctx and --steps must be >= 1");
  for (int32_t b : a.batches)
    if (b < 1 || b > 1024) usage("batches must be in [1, 1024]");
  return a;
}


// bf16 bytes of the matrices one decode step reads (every layer's projections + LM head).
double weight_bytes(const model_config& c) {
  const double d = static_cast<double>(c.n_embd), hd = static_cast<double>(c.head_dim);
  const double attn = d * hd * (2.0 * c.n_head + 2.0 * c.n_head_kv);
  const double mlp = 3.0 * d * static_cast<double>(c.n_ff);
  return 2.0 * (static_cast<double>(c.n_layer) * (attn + mlp) + d * static_cast<double>(c.n_vocab));
}

double kv_bytes_per_token(const model_config& c) {
  return 2.0 * 2.0 * static_cast<double>(c.n_layer) * static_cast<double>(c.n_head_kv) * static_cast<double>(c.head_dim);
}

}  // namespace

int main(int argc, char** argv) {
  const bench_args a = parse(argc, argv);
  try {
    const model m = load_model(a.model);
    const model_config& c = m.config();
    nlohmann::json rows = nlohmann::json::array();
    if (!a.json)
      std::printf("| model | device | batch | ctx | step ms | tok/s | floor ms | %% of floor |\n|---|---|---|---|---|---|---|---|\n");
    for (const int32_t B : a.batches) {
      const int32_t n_ctx = a.ctx + a.steps + 8;
      std::unique_ptr<backend> be = bench::make_backend(a.device, m, B, n_ctx, a.device == "cuda" ? 512 : 256);
      std::vector<int32_t> seqs;
      for (int32_t i = 0; i < B; ++i) seqs.push_back(*be->open_sequence());
      // Prefill: any valid ids (away from the special tokens at the start of the vocabulary).
      std::vector<int32_t> prompt(static_cast<size_t>(a.ctx));
      for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>(100 + (i * 7919) % (c.n_vocab - 100));
      const int32_t chunk = std::min<int32_t>(be->limits().max_tokens_per_step, 256);
      for (int32_t s : seqs)
        for (int32_t done = 0; done < a.ctx; done += chunk) {
          const int32_t n = std::min(chunk, a.ctx - done);
          const batch_sequence one{s, n, 0};
          if (be->forward({{prompt.data() + done, static_cast<size_t>(n)}, {&one, 1}, {}}).status != forward_status::ok)
            throw std::runtime_error("out of KV during prefill");
        }
      std::vector<batch_sequence> bs;
      for (int32_t s : seqs) bs.push_back({s, 1, 1});
      std::vector<int32_t> tokens(static_cast<size_t>(B), 1000);
      std::vector<double> ms;
      for (int32_t step = 0; step < a.steps + 3; ++step) {
        const auto t0 = clock_type::now();
        const forward_output o = be->forward({tokens, bs, {}});
        const double dt = std::chrono::duration<double, std::milli>(clock_type::now() - t0).count();
        if (o.status != forward_status::ok) throw std::runtime_error("out of KV while decoding");
        for (int32_t i = 0; i < B; ++i)  // next inputs: the greedy tokens, as real decoding feeds them
          tokens[static_cast<size_t>(i)] = static_cast<int32_t>(
              std::max_element(o.logits + static_cast<int64_t>(i) * c.n_vocab, o.logits + (i + 1) * c.n_vocab) -
              (o.logits + static_cast<int64_t>(i) * c.n_vocab));
        if (step >= 3) ms.push_back(dt);
      }
      std::sort(ms.begin(), ms.end());
      const double step_ms = ms[ms.size() / 2];
      const double bytes = weight_bytes(c) + static_cast<double>(B) * (a.ctx + a.steps / 2.0) * kv_bytes_per_token(c);
      const double floor_ms = a.bandwidth_gbs > 0 ? bytes / (a.bandwidth_gbs * 1e9) * 1e3 : 0.0;
      const double tps = B / (step_ms * 1e-3);
      rows.push_back({{"model", c.name}, {"device", a.device}, {"batch", B}, {"ctx", a.ctx}, {"step_ms", step_ms},
                      {"tokens_per_s", tps}, {"floor_ms", floor_ms},
                      {"pct_of_floor", floor_ms > 0 ? 100.0 * floor_ms / step_ms : 0.0}});
      if (!a.json) {
        std::printf("| %s | %s | %d | %d | %.3f | %.1f | ", c.name.c_str(), a.device.c_str(), B, a.ctx, step_ms, tps);
        if (floor_ms > 0) std::printf("%.3f | %.1f%% |\n", floor_ms, 100.0 * floor_ms / step_ms);
        else std::printf("- | - |\n");
        std::fflush(stdout);
      }
    }
    if (a.json) std::printf("%s\n", rows.dump().c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_model_decode: %s\n", e.what());
    return 1;
  }
  return 0;
}

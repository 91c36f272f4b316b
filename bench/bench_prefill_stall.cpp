// How long a joining request's prompt stalls the requests already decoding.
//
// B requests decode (plain decoding through the serving loop, spec_decoder without a drafter);
// after a few steps one more request joins with a P-token prompt. Every step() is timed on
// the host. The decoding requests see their next token only when step() returns, so the
// longest step while the newcomer is prefilled is their worst inter-token gap (TPOT spike),
// and the sum of the steps that carried prefill work is the newcomer's time to first token.
//
//   bench_prefill_stall --model PATH [--device cpu|cuda] [--batch B] [--prompt P]
//                       [--chunk C] [--steps N] [--json]
//
// Output: the decode-only step median, the median and longest step while the newcomer is
// prefilled, how many steps that took, and the newcomer's TTFT. A first join (not measured)
// warms the new step shapes up.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench_backend.h"
#include "engine/backend.h"
#include "engine/model.h"
#include "engine/spec/policy.h"
#include "engine/spec/spec_decoder.h"

namespace {

using namespace dspark;
using clock_type = std::chrono::steady_clock;

struct bench_args {
  std::string model;
  std::string device = "cpu";
  int32_t batch = 8;
  int32_t prompt = 2048;
  int32_t chunk = 256;
  int32_t steps = 24;  // decode steps measured before the newcomer joins
  bool json = false;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "bench_prefill_stall: %s\nusage: bench_prefill_stall --model PATH [--device cpu|cuda] [--batch B] "
               "[--prompt P] [--chunk C] [--steps N] [--json]\n",
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
    else if (k == "--batch") a.batch = std::atoi(v.c_str());
    else if (k == "--prompt") a.prompt = std::atoi(v.c_str());
    else if (k == "--chunk") a.chunk = std::atoi(v.c_str());
    else if (k == "--steps") a.steps = std::atoi(v.c_str());
    else usage("unknown option " + k);
  }
  if (a.model.empty()) usage("--model is required");
  if (a.device != "cpu" && a.device != "cuda") usage("--device must be cpu or cuda");
  if (a.batch < 1 || a.batch > 256 || a.prompt < 1 || a.chunk < 1 || a.steps < 3)
    usage("--batch 1..256, --prompt >= 1, --chunk >= 1, --steps >= 3");
  return a;
}


double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const bench_args a = parse(argc, argv);
  try {
    const model m = load_model(a.model);
    const model_config& c = m.config();
    const int32_t n_ctx = a.prompt + a.steps * 4 + 64;
    std::unique_ptr<backend> be = bench::make_backend(a.device, m, a.batch + 1, n_ctx, std::max(a.device == "cuda" ? 512 : 256, a.chunk + a.batch + 1));
    fixed_gamma_policy plain(0);
    spec_decoder dec(*be, nullptr, plain, nullptr, m.stop_ids(), {.max_requests = a.batch + 1, .prefill_chunk = a.chunk});

    sampling_params sp;
    sp.temperature = 0.f;
    sp.max_tokens = n_ctx;  // the running requests outlive the measurement
    auto prompt_of = [&](int32_t n, int32_t salt) {
      std::vector<int32_t> p(static_cast<size_t>(n));
      for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<int32_t>(100 + (i * 7919 + salt * 104729) % (c.n_vocab - 100));
      return p;
    };
    for (int32_t r = 0; r < a.batch; ++r) (void)dec.add(prompt_of(16, r), sp);
    for (int32_t i = 0; i < 3; ++i) (void)dec.step();  // prefill of the short prompts + warm-up

    std::vector<double> decode_ms;
    for (int32_t i = 0; i < a.steps; ++i) {
      const auto t0 = clock_type::now();
      (void)dec.step();
      decode_ms.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t0).count());
    }

    // The newcomer joins; steps run until it has its first token. The first join is a warm-up
    // (new step shapes: kernel plans, caches); the second is measured.
    sampling_params sp_new = sp;
    sp_new.max_tokens = 4;
    std::vector<double> join_ms;
    double ttft_ms = 0.0;
    for (int32_t round = 0; round < 2; ++round) {
      std::vector<int32_t> first_token_seen;
      const int32_t id = dec.add(prompt_of(a.prompt, 999 + round), sp_new,
                                 [&](int32_t, std::string_view) { first_token_seen.push_back(1); });
      join_ms.clear();
      const auto t_join = clock_type::now();
      while (first_token_seen.empty() && join_ms.size() < 10000) {
        const auto t0 = clock_type::now();
        (void)dec.step();
        const auto t1 = clock_type::now();
        join_ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        if (!first_token_seen.empty()) ttft_ms = std::chrono::duration<double, std::milli>(t1 - t_join).count();
        if (dec.finished(id)) break;
      }
      while (!dec.finished(id)) (void)dec.step();
      (void)dec.take(id);
    }
    const double base = median(decode_ms);
    const double worst = join_ms.empty() ? 0.0 : *std::max_element(join_ms.begin(), join_ms.end());
    const double join_median = median(join_ms);
    const nlohmann::json row = {{"model", c.name},        {"device", a.device},     {"batch", a.batch},
                                {"prompt", a.prompt},     {"chunk", a.chunk},       {"decode_step_ms", base},
                                {"worst_step_ms", worst}, {"median_join_step_ms", join_median},
                                {"steps_to_first_token", join_ms.size()},
                                {"ttft_ms", ttft_ms},     {"stall_ratio", base > 0 ? worst / base : 0.0}};
    if (a.json) {
      std::printf("%s\n", row.dump().c_str());
    } else {
      std::printf("| model | device | batch | prompt | chunk | decode step ms | join steps median / worst ms | steps to 1st token | newcomer TTFT ms |\n"
                  "|---|---|---|---|---|---|---|---|---|\n| %s | %s | %d | %d | %d | %.2f | %.2f / %.2f | %zu | %.1f |\n",
                  c.name.c_str(), a.device.c_str(), a.batch, a.prompt, a.chunk, base, join_median, worst, join_ms.size(),
                  ttft_ms);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_prefill_stall: %s\n", e.what());
    return 1;
  }
  return 0;
}

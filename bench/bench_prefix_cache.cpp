// Prefill time a shared prompt prefix saves with prefix caching (engine/kv_block_pool.h).
//
// Requests with the same S-token prefix (a long system prompt) and D distinct tokens each go
// through the serving loop (spec_decoder, plain decoding, max_tokens 1) one at a time, so a
// request's prefill_s is its time to first token. "cold": prefix_cache off, the whole prompt is
// prefilled. "cached": prefix_cache on, after one request that published the prefix; each
// request attaches the cached full blocks and prefills only the rest. Both modes alternate on
// one backend, so they see the same machine state; medians over the repetitions.
//
//   bench_prefix_cache --model PATH [--device cpu|cuda] [--shared S] [--distinct D]
//                      [--block B] [--chunk C] [--decode T] [--reps N] [--json]
//
// --decode T also generates T tokens per request and reports decode tok/s in both modes (a
// cached prefix makes the sequence's block table non-consecutive: the CPU attention then
// gathers its K/V each step, as for any fragmented sequence).
//
// The logits do not depend on the mode (tests/engine/test_prefix_cache_backend.cpp); this
// only times it.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "bench/bench_backend.h"
#include "engine/backend.h"
#include "engine/model.h"
#include "engine/spec/policy.h"
#include "engine/spec/spec_decoder.h"

namespace {

using namespace dspark;

constexpr const char* k_usage =
    "bench_prefix_cache --model PATH [--device cpu|cuda] [--shared S] [--distinct D] [--block B] [--chunk C] "
    "[--decode T] [--reps N] [--json]";

struct bench_args {
  bench::common_args common;
  int32_t shared = 512;
  int32_t distinct = 16;
  int32_t block = 16;
  int32_t chunk = 256;
  int32_t decode = 1;
  int32_t reps = 5;
};

bench_args parse(int argc, char** argv) {
  bench_args a;
  const std::vector<std::pair<const char*, int32_t*>> ints = {{"--shared", &a.shared}, {"--distinct", &a.distinct},
                                                              {"--block", &a.block},   {"--chunk", &a.chunk},
                                                              {"--decode", &a.decode}, {"--reps", &a.reps}};
  a.common = bench::parse_common(argc, argv, "bench_prefix_cache", k_usage, [&](const std::string& k, const std::string& v) {
    for (const auto& [name, dst] : ints)
      if (k == name) return (*dst = std::atoi(v.c_str())), true;
    return false;
  });
  if (a.shared < 0 || a.distinct < 1 || a.block < 1 || a.chunk < 1 || a.decode < 1 || a.reps < 1)
    bench::usage_exit("bench_prefix_cache", "--shared >= 0, --distinct, --block, --chunk, --decode, --reps >= 1", k_usage);
  return a;
}

}  // namespace

int main(int argc, char** argv) {
  const bench_args a = parse(argc, argv);
  try {
    const model m = load_model(a.common.model);
    const model_config& c = m.config();
    const int32_t n_prompt = a.shared + a.distinct, n_ctx = n_prompt + a.decode + 16;
    // Two sequences of room: the cold runs never evict the cached prefix.
    std::unique_ptr<backend> be = bench::make_backend(a.common.device, m, 2, n_ctx, a.chunk, a.block);
    auto tokens = [&](int32_t n, int32_t salt) {  // ids away from the special tokens at the start
      std::vector<int32_t> p(static_cast<size_t>(n));
      for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<int32_t>(100 + (i * 7919 + salt * 104729) % (c.n_vocab - 100));
      return p;
    };
    const std::vector<int32_t> shared = tokens(a.shared, 1);
    auto prompt_of = [&](int32_t r) {
      std::vector<int32_t> p = shared;
      const std::vector<int32_t> own = tokens(a.distinct, 1000 + r);
      p.insert(p.end(), own.begin(), own.end());
      return p;
    };
    sampling_params sp;
    sp.max_tokens = a.decode;
    fixed_gamma_policy plain(0);
    spec_decoder cold(*be, nullptr, plain, nullptr, {}, {.max_requests = 1, .prefill_chunk = a.chunk});
    spec_decoder cached(*be, nullptr, plain, nullptr, {}, {.max_requests = 1, .prefill_chunk = a.chunk, .prefix_cache = true});
    auto run = [&](spec_decoder& dec, const std::vector<int32_t>& p) {
      const int32_t id = dec.add(p, sp);
      dec.run();
      return dec.take(id).gen.stats;
    };
    run(cold, prompt_of(-1));    // warm-up
    run(cached, prompt_of(-2));  // publishes the shared prefix
    std::vector<double> cold_ms, cached_ms, cold_tok_s, cached_tok_s;
    int32_t cached_tokens = 0;
    for (int32_t r = 0; r < a.reps; ++r) {
      const generation_stats sc = run(cold, prompt_of(r));
      cold_ms.push_back(sc.prefill_s * 1e3);
      cold_tok_s.push_back(sc.decode_tok_s);
      const generation_stats s = run(cached, prompt_of(r));
      cached_ms.push_back(s.prefill_s * 1e3);
      cached_tok_s.push_back(s.decode_tok_s);
      cached_tokens = s.cached_tokens;
    }
    const double tc = bench::median(cold_ms), tw = bench::median(cached_ms);
    const double dc = bench::median(cold_tok_s), dw = bench::median(cached_tok_s);
    const nlohmann::json row = {{"model", c.name},       {"device", a.common.device},        {"shared", a.shared},
                                {"distinct", a.distinct}, {"block", a.block},          {"chunk", a.chunk},
                                {"reps", a.reps},         {"cached_tokens", cached_tokens},
                                {"cold_ttft_ms", tc},     {"cached_ttft_ms", tw},      {"speedup", tw > 0 ? tc / tw : 0.0},
                                {"decode_tokens", a.decode}, {"cold_decode_tok_s", dc}, {"cached_decode_tok_s", dw}};
    if (a.common.json) {
      std::printf("%s\n", row.dump().c_str());
    } else {
      std::printf("| model | device | shared + distinct | block | cached tokens | cold TTFT ms | cached TTFT ms | saved |"
                  " decode tok/s cold / cached |\n|---|---|---|---|---|---|---|---|---|\n"
                  "| %s | %s | %d + %d | %d | %d | %.1f | %.1f | %.1f ms (%.1fx) | ",
                  c.name.c_str(), a.common.device.c_str(), a.shared, a.distinct, a.block, cached_tokens, tc, tw, tc - tw,
                  tw > 0 ? tc / tw : 0.0);
      if (a.decode > 1) std::printf("%.1f / %.1f |\n", dc, dw);
      else std::printf("- |\n");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_prefix_cache: %s\n", e.what());
    return 1;
  }
  return 0;
}

// CPU kernel benchmark: thread-pool dispatch latency and matmul at SmolLM2-135M's shapes.
//
//   build/bench/bench_kernels [--quick]
//
// Weights are random but valid blocks in the default model's types (Q4_1 for the 30 layers'
// 7 projections, Q8_0 for the 49152 x 576 tied LM head). "decode pass" runs every layer's
// matmuls plus the LM head for one token over 30 distinct layers' weights (~96 MB, more than
// the caches hold), the memory traffic of a real decode step; its inverse is the matmul-only
// ceiling on decode tokens/s. "prefill" runs one layer's 7 matmuls for 512 tokens and scales
// by 30 (compute bound, so caching hardly matters) plus the LM head for the last token.
// "verify sizes" runs one layer for the few-token products of speculative verification.
// Every figure is the median of repeated runs after a warm-up.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <immintrin.h>

#include "kernels/cpu/matmul.h"
#include "kernels/cpu/thread_pool.h"
#include "models/formats/fp16.h"
#include "models/formats/quant_blocks.h"

namespace {

using namespace dspark;
using clock_type = std::chrono::steady_clock;

struct owned {
  std::vector<uint8_t> bytes;
  tensor_view view;
};

uint64_t g_rng = 0x9E3779B97F4A7C15ull;
uint64_t next_u64() {
  g_rng ^= g_rng << 13;
  g_rng ^= g_rng >> 7;
  g_rng ^= g_rng << 17;
  return g_rng;
}

owned make_weight(const char* name, dtype t, int64_t n_out, int64_t n_in) {
  owned o;
  o.bytes.resize(bytes_for(t, n_out * n_in));
  for (size_t i = 0; i + 8 <= o.bytes.size(); i += 8) {
    const uint64_t v = next_u64();
    std::memcpy(&o.bytes[i], &v, 8);
  }
  const int64_t nb = n_out * n_in / 32;
  for (int64_t b = 0; b < nb; ++b) {  // finite scales
    if (t == dtype::q4_1) {
      auto* blk = reinterpret_cast<block_q4_1*>(o.bytes.data()) + b;
      blk->d = fp32_to_fp16(0.01f);
      blk->m = fp32_to_fp16(-0.08f);
    } else if (t == dtype::q8_0) {
      reinterpret_cast<block_q8_0*>(o.bytes.data())[b].d = fp32_to_fp16(0.001f);
    }
  }
  o.view.name = name;
  o.view.type = t;
  o.view.shape = {n_out, n_in};
  o.view.data = o.bytes.data();
  o.view.n_bytes = o.bytes.size();
  return o;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double thread_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Median CPU seconds of the calling thread in the last time_it: on a shared machine this is
// the kernel's own cost when it runs single-threaded, wherever the scheduler parks it.
double g_last_cpu = 0;

// Median wall seconds of fn() over `reps` runs after `warmup` runs.
double time_it(const std::function<void()>& fn, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) fn();
  std::vector<double> s, c;
  for (int i = 0; i < reps; ++i) {
    const double c0 = thread_cpu_seconds();
    const auto t0 = clock_type::now();
    fn();
    s.push_back(std::chrono::duration<double>(clock_type::now() - t0).count());
    c.push_back(thread_cpu_seconds() - c0);
  }
  g_last_cpu = median(c);
  return median(s);
}

struct shape {
  const char* name;
  int64_t n_out, n_in;
};
constexpr shape kLayerShapes[] = {{"attn_q", 576, 576},  {"attn_k", 192, 576},
                                  {"attn_v", 192, 576},  {"attn_o", 576, 576},
                                  {"ffn_gate", 1536, 576}, {"ffn_up", 1536, 576},
                                  {"ffn_down", 576, 1536}};
constexpr int kLayers = 30;

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const int reps = quick ? 5 : 21;

  // Each of 2 items spins for kItemUs, so the ideal time per call is 2 * kItemUs / threads;
  // the excess is the pool's dispatch + wake + join cost. With an empty body the caller would
  // take every chunk before a worker woke up, which measures nothing.
  std::printf("== thread_pool dispatch overhead (parallel_for over 2 items of ~2 us each)\n");
  {
    constexpr double kItemUs = 2.0;
    auto spin_us = [](double us) {
      const auto end = clock_type::now() + std::chrono::nanoseconds(static_cast<int64_t>(us * 1000));
      while (clock_type::now() < end) {
      }
    };
    for (int nt : {1, 2}) {
      thread_pool pool(nt);
      const int calls = 5000;
      std::atomic<int> on_worker{0};
      const double s = time_it([&] {
        for (int i = 0; i < calls; ++i) {
          pool.parallel_for(2, 1, [&](int64_t b, int64_t e, int ti) {
            if (ti != 0) on_worker.fetch_add(1, std::memory_order_relaxed);
            spin_us(kItemUs * static_cast<double>(e - b));
          });
        }
      }, 1, quick ? 3 : 7);
      const double per_call = s / calls * 1e6;
      std::printf("  threads %d: %.2f us per call, ideal %.2f, overhead %.2f us; items run on "
                  "workers: %.0f%%\n", nt, per_call, 2 * kItemUs / nt, per_call - 2 * kItemUs / nt,
                  100.0 * on_worker.load() / (2.0 * calls * ((quick ? 3 : 7) + 1)));
    }
  }

  std::printf("\n== memory read bandwidth floor (sum of a 128 MB buffer, AVX2 loads)\n");
  {
    const size_t n = size_t{128} << 20;
    std::vector<uint8_t> buf(n, 1);
    for (int nt : {1, 2}) {
      thread_pool pool(nt);
      std::vector<long long> sink(64);
      const double s = time_it([&] {
        pool.parallel_for(static_cast<int64_t>(n / 4096), 64, [&](int64_t b, int64_t e, int ti) {
          __m256i acc = _mm256_setzero_si256();
          for (int64_t i = b * 4096; i < e * 4096; i += 128) {
            const auto* p = reinterpret_cast<const __m256i*>(buf.data() + i);
            acc = _mm256_add_epi64(acc, _mm256_loadu_si256(p));
            acc = _mm256_add_epi64(acc, _mm256_loadu_si256(p + 1));
            acc = _mm256_add_epi64(acc, _mm256_loadu_si256(p + 2));
            acc = _mm256_add_epi64(acc, _mm256_loadu_si256(p + 3));
          }
          sink[ti] += _mm256_extract_epi64(acc, 0);
        });
      }, 1, quick ? 3 : 7);
      std::printf("  threads %d: %.2f GB/s\n", nt, n / s / 1e9);
    }
  }

  std::printf("\n== building %d layers of Q4_1 weights + Q8_0 LM head (random)\n", kLayers);
  std::vector<std::vector<owned>> layers(kLayers);
  for (auto& l : layers)
    for (const auto& sh : kLayerShapes) l.push_back(make_weight(sh.name, dtype::q4_1, sh.n_out, sh.n_in));
  owned lm_head = make_weight("lm_head", dtype::q8_0, 49152, 576);
  size_t layer_bytes = 0;
  double layer_macs = 0;
  for (const auto& w : layers[0]) {
    layer_bytes += w.view.n_bytes;
    layer_macs += static_cast<double>(w.view.n_elements());
  }
  const double pass_bytes = kLayers * static_cast<double>(layer_bytes) + lm_head.view.n_bytes;
  const double pass_macs = kLayers * layer_macs + static_cast<double>(lm_head.view.n_elements());
  std::printf("  weights per decode pass: %.1f MB, %.1f M MACs per token\n", pass_bytes / 1e6,
              pass_macs / 1e6);

  const int64_t max_tokens = 512;
  std::vector<float> x(max_tokens * 1536), y(max_tokens * 49152);
  for (auto& v : x) v = static_cast<float>(static_cast<int64_t>(next_u64() % 2001) - 1000) / 1000.0f;
  size_t ws_bytes = 0;
  for (const auto& w : layers[0]) ws_bytes = std::max(ws_bytes, matmul_workspace_size(w.view, max_tokens));
  ws_bytes = std::max(ws_bytes, matmul_workspace_size(lm_head.view, max_tokens));
  void* ws = std::aligned_alloc(64, (ws_bytes + 63) / 64 * 64);
  std::memset(ws, 0, ws_bytes);

  const char* mode_name[2] = {"q8 act", "f32 act"};
  const matmul_precision modes[2] = {matmul_precision::q8_activations,
                                     matmul_precision::f32_activations};

  std::printf("\n== per-shape matmul, n_tokens 1 (weights hot in cache)\n");
  std::printf("  %-9s %-11s %7s %9s %9s %9s %9s\n", "shape", "mode", "threads", "us", "GB/s", "GMAC/s",
              "cpu us");
  for (int m = 0; m < 2; ++m) {
    for (int nt : {1, 2}) {
      thread_pool pool(nt);
      for (size_t i = 0; i < layers[0].size(); ++i) {
        const auto& w = layers[0][i].view;
        const double s = time_it([&] { matmul(w, x.data(), 1, y.data(), ws, pool, modes[m]); }, 20, reps * 10);
        std::printf("  %-9s %-11s %7d %9.2f %9.2f %9.2f %9.2f\n", w.name.c_str(), mode_name[m], nt, s * 1e6,
                    w.n_bytes / s / 1e9, w.n_elements() / s / 1e9, g_last_cpu * 1e6);
      }
      const double s = time_it([&] { matmul(lm_head.view, x.data(), 1, y.data(), ws, pool, modes[m]); }, 3, reps);
      std::printf("  %-9s %-11s %7d %9.2f %9.2f %9.2f %9.2f\n", "lm_head", mode_name[m], nt, s * 1e6,
                  lm_head.view.n_bytes / s / 1e9, lm_head.view.n_elements() / s / 1e9, g_last_cpu * 1e6);
    }
  }

  std::printf("\n== decode pass: %d layers x 7 matmuls + LM head, n_tokens 1 (weights streamed)\n", kLayers);
  std::printf("  %-11s %7s %9s %9s %9s %14s %9s\n", "mode", "threads", "ms", "GB/s", "GMAC/s", "matmul tok/s",
              "cpu ms");
  for (int m = 0; m < 2; ++m) {
    for (int nt : {1, 2}) {
      thread_pool pool(nt);
      const double s = time_it([&] {
        for (auto& l : layers)
          for (auto& w : l) matmul(w.view, x.data(), 1, y.data(), ws, pool, modes[m]);
        matmul(lm_head.view, x.data(), 1, y.data(), ws, pool, modes[m]);
      }, 2, reps);
      std::printf("  %-11s %7d %9.3f %9.2f %9.2f %14.1f %9.3f\n", mode_name[m], nt, s * 1e3, pass_bytes / s / 1e9,
                  pass_macs / s / 1e9, 1.0 / s, g_last_cpu * 1e3);
    }
  }

  // Speculative verify forwards are short multi-token products; their rows are bitwise the
  // decode rows (batch invariance), and should cost less per token than n separate decodes.
  std::printf("\n== verify sizes: one layer's 7 matmuls, weights hot, 1 thread\n");
  std::printf("  %-11s %9s %12s %16s\n", "mode", "n_tokens", "cpu us", "cpu us per token");
  for (int m = 0; m < 2; ++m) {
    thread_pool pool(1);
    for (int64_t nt : {1, 2, 3, 4, 8, 16}) {
      time_it([&] {
        for (auto& w : layers[0]) matmul(w.view, x.data(), nt, y.data(), ws, pool, modes[m]);
      }, 10, reps * 5);
      std::printf("  %-11s %9lld %12.2f %16.2f\n", mode_name[m], static_cast<long long>(nt),
                  g_last_cpu * 1e6, g_last_cpu * 1e6 / static_cast<double>(nt));
    }
  }

  std::printf("\n== prefill: n_tokens %lld, one layer's 7 matmuls (x%d) + LM head for 1 token\n",
              static_cast<long long>(max_tokens), kLayers);
  std::printf("  %-11s %7s %9s %9s %14s %12s\n", "mode", "threads", "layer ms", "GMAC/s", "prefill tok/s",
              "cpu layer ms");
  for (int m = 0; m < 2; ++m) {
    for (int nt : {1, 2}) {
      thread_pool pool(nt);
      const double s = time_it([&] {
        for (auto& w : layers[0]) matmul(w.view, x.data(), max_tokens, y.data(), ws, pool, modes[m]);
      }, 1, quick ? 3 : 5);
      const double cpu = g_last_cpu;
      const double head = time_it([&] { matmul(lm_head.view, x.data(), 1, y.data(), ws, pool, modes[m]); }, 1, 5);
      const double total = kLayers * s + head;
      std::printf("  %-11s %7d %9.2f %9.2f %14.1f %12.2f\n", mode_name[m], nt, s * 1e3,
                  layer_macs * max_tokens / s / 1e9, max_tokens / total, cpu * 1e3);
    }
  }
  std::free(ws);
  return 0;
}

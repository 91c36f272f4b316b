// bench_cuda: GPU ceilings and end-to-end step times of the CUDA engine on 8B-class shapes.
//
//   bench_cuda --out DIR [--iters N] [--decode-ctx C] [--verify-qlen Q] [--models a,b] [--quick] [--profile] [--split-len L]
//
// --quick: the first model only, GEMV table at 1/2/4/8 tokens, decode at batch 1 and 8, the
// verify curve for B = 1..32 at context 2048 (about a minute on an H100).
// --kernels: per model, each kernel kind of a batch-1 step alone (its launches replayed from one
// graph with PDL, as in the step), against the whole step (split_len 32), plus batch 8 and
// 4/8-token verify steps: where the time goes without a profiler.
// --pdl: per model (all listed), steps of 1..8 tokens as decode (B sequences of one token) and
// as verify (one sequence of B tokens), context --decode-ctx, graphs, with programmatic dependent
// launch for every step, for none, and the runner's default (pdl_max_tokens): which steps PDL
// should cover. --models takes any shape of models/arch/synthetic_model.h (smollm2-135m: the
// launch-bound case).
// --profile: no tables; after warm-up, one EAGER decode step (batch 1) and one eager 8-token
// verify step, context 2048, between cudaProfilerStart/Stop (run under
// `ncu --profile-from-start off` for per-kernel times); with attention split_len 512 (the first
// H100 run's setting), then --split-len.
//
// Measures, on the current GPU, with CUDA events after warm-up, medians of N runs:
//  (a) the ceilings: device-to-device copy bandwidth (bytes read + written) and the bf16 GEMM
//      rate of cuBLASLt at 8192^3; then the hand GEMV against cuBLASLt on every linear shape
//      of the model at 1..8 tokens (the runner uses the GEMV up to the largest token count at
//      which it wins on the sum of the shapes);
//  (b) decode tokens/s at batch 1, 8, 32, 128 (context --decode-ctx) for Qwen3-8B and
//      Llama-3.1-8B shapes with RANDOM bf16 weights generated on the GPU, and the percentage of
//      the bandwidth floor = (weight bytes + KV bytes read per step) / measured copy bandwidth;
//  (c) the verify-cost curve: step time for B = 1..512 new tokens in one step (sequences of
//      q_len = min(B, --verify-qlen) tokens), at contexts 512, 2048, 8192;
//  (d) GPU memory use and KV capacity in tokens.
// Writes DIR/bench_cuda.md (the tables, also printed) and DIR/bench_cuda.json.
// Without a CUDA device it prints "no CUDA device" and exits 0.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#if DSPARK_HAVE_CUDA
#include "kernels/cuda/cuda_check.h"
#include "engine/cuda/gpu_runner.h"
#include "engine/cuda/gpu_weights.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/pdl.h"
#include "kernels/cuda/rms_norm.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/silu_mul.h"
#include "kernels/cuda/random_fill.h"
#include "models/arch/synthetic_model.h"
#include <cuda_profiler_api.h>
#endif

namespace {

struct options {
  std::string out = "bench_cuda_out";
  int iters = 20;
  int decode_ctx = 1024;
  int verify_qlen = 8;
  int split_len = 128;  // attention keys per split (cuda_backend's default)
  std::vector<std::string> models = {"qwen3-8b", "llama3.1-8b"};
  bool quick = false;
  bool profile = false;  // one eager decode step and one eager 8-token verify step, for ncu
  bool sweep = false;     // decode/verify steps over the attention split length, then stop
  bool kernels = false;   // where a batch-1 step's time goes (kernel kinds alone vs the step), then stop
  int decode_only = 0;    // > 0: only this many batch-1 decode steps (for nsys), then stop
  bool pdl = false;       // decode and verify steps of 1..8 tokens with PDL for all, none, default; then stop
};

options parse(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument("missing value after " + a);
      return argv[++i];
    };
    if (a == "--out") o.out = next();
    else if (a == "--iters") o.iters = std::max(3, std::stoi(next()));
    else if (a == "--decode-ctx") o.decode_ctx = std::stoi(next());
    else if (a == "--verify-qlen") o.verify_qlen = std::max(1, std::stoi(next()));
    else if (a == "--quick") o.quick = true;
    else if (a == "--profile") o.profile = true;
    else if (a == "--split-len") o.split_len = std::stoi(next());
    else if (a == "--sweep") o.sweep = true;
    else if (a == "--kernels") o.kernels = true;
    else if (a == "--decode-only") o.decode_only = std::stoi(next());
    else if (a == "--pdl") o.pdl = true;
    else if (a == "--models") {
      o.models.clear();
      std::stringstream ss(next());
      for (std::string m; std::getline(ss, m, ',');) o.models.push_back(m);
    } else if (a == "--help" || a == "-h") {
      std::printf("usage: bench_cuda --out DIR [--iters N] [--decode-ctx C] [--verify-qlen Q] [--models qwen3-8b,llama3.1-8b,smollm2-135m] [--quick] [--profile] [--split-len L] [--sweep] [--kernels] [--decode-only N] [--pdl]\n");
      std::exit(0);
    } else {
      throw std::invalid_argument("unknown argument " + a);
    }
  }
  return o;
}

[[maybe_unused]] double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n == 0 ? 0.0 : (n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]));
}

}  // namespace

#if DSPARK_HAVE_CUDA
namespace {

using namespace dspark::cuda;

// Median milliseconds of `iters` runs of fn (each bracketed by events), after `warmup` runs.
double time_ms(cudaStream_t s, int warmup, int iters, const std::function<void()>& fn) {
  for (int i = 0; i < warmup; ++i) fn();
  DSPARK_CUDA_CHECK(cudaStreamSynchronize(s));
  event a, b;
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    a.record(s);
    fn();
    b.record(s);
    b.synchronize();
    t.push_back(b.elapsed_ms_since(a));
  }
  return median(t);
}

// The model shapes are synthetic_model's (one table for bench_load and this bench).
gpu_model_config model_shape(const std::string& name) { return gpu_config_from(dspark::synthetic_shape_config(name)); }

size_t kv_bytes_per_token(const gpu_model_config& c) {
  return 2ull * c.n_layer * c.n_kv_head * c.head_dim * 2;
}

struct ceilings {
  double copy_gbs = 0;     // GB/s, read + write
  double gemm_tflops = 0;  // bf16, 8192^3
};

ceilings measure_ceilings(cudaStream_t s, int iters, nlohmann::json& j, std::string& md) {
  ceilings c;
  {
    const size_t bytes = 1ull << 30;
    device_buffer a(bytes), b(bytes);
    fill_uniform(a.as<float>(), static_cast<int64_t>(bytes / 4), 1, -1.f, 1.f, s);
    const double ms = time_ms(s, 3, iters, [&] {
      DSPARK_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, s));
    });
    c.copy_gbs = 2.0 * bytes / (ms * 1e-3) / 1e9;
  }
  {
    const int64_t n = 8192;
    device_buffer w(n * n * 2), x(n * n * 2), y(n * n * 2);
    fill_uniform(w.as<bf16_t>(), n * n, 2, -1.f, 1.f, s);
    fill_uniform(x.as<bf16_t>(), n * n, 3, -1.f, 1.f, s);
    gemm_context g;
    const double ms = time_ms(s, 3, std::max(5, iters / 2), [&] {
      g.gemm(w.as<bf16_t>(), x.as<bf16_t>(), n, n, n, y.as<bf16_t>(), s);
    });
    c.gemm_tflops = 2.0 * n * n * n / (ms * 1e-3) / 1e12;
  }
  j["ceilings"] = {{"copy_GBps_read_plus_write", c.copy_gbs}, {"bf16_gemm_TFLOPs_8192", c.gemm_tflops}};
  char buf[256];
  std::snprintf(buf, sizeof buf, "## Ceilings\n\n| copy bandwidth (GB/s, read+write) | bf16 GEMM 8192^3 (TFLOP/s) |\n|---|---|\n| %.0f | %.0f |\n\n",
                c.copy_gbs, c.gemm_tflops);
  md += buf;
  return c;
}

// GEMV vs cuBLASLt on the model's linear shapes; returns the gemv_max_tokens to use.
int compare_gemv(const gpu_model_config& c, cudaStream_t s, int iters, double copy_gbs, bool quick,
                 nlohmann::json& j, std::string& md) {
  struct shp { const char* name; int64_t n_out, n_in; bool f32; };
  const shp shapes[] = {{"qkv", c.qkv_dim(), c.n_embd, false},
                        {"o", c.n_embd, c.q_dim(), false},
                        {"gate_up", 2ll * c.n_ff, c.n_embd, false},
                        {"down", c.n_embd, c.n_ff, false},
                        {"lm_head", c.n_vocab, c.n_embd, true}};
  int64_t max_w = 0, max_in = 0, max_out = 0;
  for (const auto& sh : shapes) {
    max_w = std::max(max_w, sh.n_out * sh.n_in);
    max_in = std::max(max_in, sh.n_in);
    max_out = std::max(max_out, sh.n_out);
  }
  // Several weight copies, rotated, so repeated runs do not hit a warm L2 (50 MB).
  const int n_copies = 3;
  std::vector<device_buffer> w;
  for (int i = 0; i < n_copies; ++i) {
    w.emplace_back(max_w * 2);
    fill_uniform(w.back().as<bf16_t>(), max_w, 10 + i, -0.02f, 0.02f, s);
  }
  device_buffer x(8 * max_in * 2), y(8 * max_out * 4);
  fill_uniform(x.as<bf16_t>(), 8 * max_in, 20, -1.f, 1.f, s);
  gemm_context g;
  md += "## GEMV (SIMT and tensor-core mma) vs cuBLASLt (" + std::to_string(c.n_embd) +
        "-wide shapes; the runner uses " + gemv_name(gemv_kind()) +
        ")\n\n| tokens | shape | SIMT us | SIMT GB/s | mma us | mma GB/s | cuBLASLt us | cuBLASLt GB/s |\n"
        "|---|---|---|---|---|---|---|---|\n";
  int best = 0;
  bool still_winning = true;
  for (int n = 1; n <= k_gemv_max_tokens; ++n) {
    if (quick && n != 1 && n != 2 && n != 4 && n != 8) continue;
    double sum_gemv = 0, sum_blas = 0;
    for (const auto& sh : shapes) {
      int k = 0;
      auto pick = [&] { return w[(k++) % n_copies].as<bf16_t>(); };
      const double t_simt = time_ms(s, 3, iters, [&] {
        if (sh.f32) gemv_bf16_simt(pick(), x.as<bf16_t>(), n, sh.n_out, sh.n_in, y.as<float>(), s);
        else gemv_bf16_simt(pick(), x.as<bf16_t>(), n, sh.n_out, sh.n_in, y.as<bf16_t>(), s);
      });
      const double t_mma = time_ms(s, 3, iters, [&] {
        if (sh.f32) gemv_bf16_mma(pick(), x.as<bf16_t>(), n, sh.n_out, sh.n_in, y.as<float>(), s);
        else gemv_bf16_mma(pick(), x.as<bf16_t>(), n, sh.n_out, sh.n_in, y.as<bf16_t>(), s);
      });
      const double t_gemv = gemv_kind() == gemv_impl::mma ? t_mma : t_simt;
      const double t_blas = time_ms(s, 3, iters, [&] {
        if (sh.f32) g.gemm(pick(), x.as<bf16_t>(), n, sh.n_out, sh.n_in, y.as<float>(), 0.f, s);
        else g.gemm(pick(), x.as<bf16_t>(), n, sh.n_out, sh.n_in, y.as<bf16_t>(), s);
      });
      sum_gemv += t_gemv;
      sum_blas += t_blas;
      const double bytes = 2.0 * sh.n_out * sh.n_in;
      char buf[256];
      std::snprintf(buf, sizeof buf, "| %d | %s %lldx%lld | %.1f | %.0f | %.1f | %.0f | %.1f | %.0f |\n", n, sh.name,
                    static_cast<long long>(sh.n_out), static_cast<long long>(sh.n_in), t_simt * 1e3,
                    bytes / (t_simt * 1e-3) / 1e9, t_mma * 1e3, bytes / (t_mma * 1e-3) / 1e9, t_blas * 1e3,
                    bytes / (t_blas * 1e-3) / 1e9);
      md += buf;
      j["gemv_vs_cublaslt"].push_back({{"tokens", n}, {"shape", sh.name}, {"n_out", sh.n_out}, {"n_in", sh.n_in},
                                       {"gemv_us", t_gemv * 1e3}, {"gemv_impl", gemv_name(gemv_kind())},
                                       {"simt_us", t_simt * 1e3}, {"mma_us", t_mma * 1e3},
                                       {"cublaslt_us", t_blas * 1e3},
                                       {"gemv_GBps", bytes / (t_gemv * 1e-3) / 1e9},
                                       {"cublaslt_GBps", bytes / (t_blas * 1e-3) / 1e9},
                                       {"copy_GBps", copy_gbs}});
    }
    if (still_winning && sum_gemv <= sum_blas) best = n;
    else still_winning = false;
  }
  md += "\nGEMV at least as fast as cuBLASLt (sum of the shapes) up to " + std::to_string(best) +
        " tokens; the runner uses the GEMV up to 8 tokens regardless (bitwise batch invariance).\n\n";
  j["gemv_max_tokens_chosen"] = best;
  return best;
}

// One model: weights, KV pool, runner; decode table and verify curve.
void bench_model(const std::string& name, const options& o, const ceilings& ceil, cudaStream_t s,
                 nlohmann::json& jall, std::string& md) {
  const gpu_model_config c = model_shape(name);
  nlohmann::json j;
  j["model"] = name;
  std::printf("[bench_cuda] %s: generating random weights...\n", name.c_str());
  std::fflush(stdout);
  size_t free0 = 0, total = 0;
  DSPARK_CUDA_CHECK(cudaMemGetInfo(&free0, &total));

  std::string gemv_md;
  nlohmann::json jg;
  if (!o.profile && !o.sweep && !o.pdl && o.decode_only == 0) {
    (void)compare_gemv(c, s, o.quick ? 5 : o.iters, ceil.copy_gbs, o.quick, jg, gemv_md);
  }

  const gpu_weights w = gpu_weights::random(c, 1234, s);
  const int32_t bs = 16;
  const int32_t max_ctx = 8192 + 64;
  gpu_runner_options ro;
  ro.max_tokens = 512;
  ro.max_seqs = 128;
  ro.max_rows = 512;
  ro.max_blocks_per_seq = (std::max(max_ctx, o.decode_ctx + 1) + bs - 1) / bs;
  ro.split_len = o.split_len;
  // The production setting: GEMV up to 8 tokens, so verify steps are bit-identical to decode.
  ro.gemv_max_tokens = k_gemv_max_tokens;
  // KV pool: 85% of the free memory left after the weights, an upper bound of the runner's
  // buffers (the runner is built after the pool, which it references) and a 1 GiB margin.
  std::unique_ptr<gpu_kv_pool> kv_holder;
  const size_t runner_bound = gpu_runner::device_bytes_for(c, ro, bs) + (64ull << 20);
  size_t free1 = 0;
  DSPARK_CUDA_CHECK(cudaMemGetInfo(&free1, &total));
  const size_t margin = 1ull << 30;
  const size_t pool_bytes = free1 > runner_bound + margin ? static_cast<size_t>(0.85 * (free1 - runner_bound - margin)) : 0;
  const int32_t n_blocks = static_cast<int32_t>(std::min<size_t>(pool_bytes / gpu_kv_pool::bytes_per_block(c, bs), 1u << 30));
  if (n_blocks < 1024) throw std::runtime_error("not enough GPU memory for a KV pool");
  kv_holder = std::make_unique<gpu_kv_pool>(c, bs, n_blocks);
  const gpu_kv_pool& kv = *kv_holder;
  fill_uniform(kv.k(0), static_cast<int64_t>(kv.bytes() / 2), 99, -1.f, 1.f, s);  // K and V of all layers: random
  gpu_runner run(c, w, kv, ro);
  size_t free2 = 0;
  DSPARK_CUDA_CHECK(cudaMemGetInfo(&free2, &total));

  const double kvb = static_cast<double>(kv_bytes_per_token(c));
  const double wbytes = static_cast<double>(c.matrix_bytes_per_step());
  j["memory"] = {{"gpu_total_bytes", total},
                 {"weights_bytes", w.bytes()},
                 {"kv_pool_bytes", kv.bytes()},
                 {"runner_bytes", run.device_bytes()},
                 {"free_after_bytes", free2},
                 {"kv_capacity_tokens", static_cast<int64_t>(kv.n_blocks()) * bs},
                 {"kv_bytes_per_token", kv_bytes_per_token(c)},
                 {"weights_streamed_per_step_bytes", c.matrix_bytes_per_step()}};

  // Fills the plan for n_seqs sequences of q_len new tokens after `ctx` cached tokens. Sequence
  // r gets blocks r*bps .. (mod pool size: aliased when the pool is too small; noted).
  auto fill_plan = [&](gpu_runner& target, int n_seqs, int q_len, int ctx, bool& aliased) {
    const auto& p = target.plan();
    const int kv_len = ctx + q_len;
    const int bps = (kv_len + bs - 1) / bs;
    aliased = static_cast<int64_t>(n_seqs) * bps > kv.n_blocks();
    p.cu_q_lens[0] = 0;
    uint32_t rng = 12345;
    for (int r = 0; r < n_seqs; ++r) {
      p.cu_q_lens[r + 1] = p.cu_q_lens[r] + q_len;
      p.kv_lens[r] = kv_len;
      for (int b = 0; b < ro.max_blocks_per_seq; ++b)
        p.block_tables[static_cast<size_t>(r) * ro.max_blocks_per_seq + b] =
            b < bps ? static_cast<int32_t>((static_cast<int64_t>(r) * bps + b) % kv.n_blocks()) : 0;
      for (int i = 0; i < q_len; ++i) {
        const int t = r * q_len + i, pos = ctx + i;
        rng = rng * 1664525u + 1013904223u;
        p.tokens[t] = static_cast<int32_t>(rng % static_cast<uint32_t>(c.n_vocab));
        p.positions[t] = pos;
        p.slots[t] = p.block_tables[static_cast<size_t>(r) * ro.max_blocks_per_seq + pos / bs] * bs + pos % bs;
        p.logit_rows[t] = t;
      }
    }
  };

  // Median ms of a graph-replayed step: n_seqs sequences of q new tokens, ending at context ctx.
  auto time_step = [&](gpu_runner& target, int n_seqs, int q, int ctx) {
    bool aliased = false;
    fill_plan(target, n_seqs, q, ctx - q, aliased);
    dspark::cuda::step_desc sd;
    sd.n_tokens = n_seqs * q;
    sd.n_seqs = n_seqs;
    sd.n_rows = n_seqs * q;
    sd.max_kv_len = ctx;
    sd.copy_logits = false;
    sd.argmax = true;
    return time_ms(s, 3, o.iters, [&] { target.run(sd, s); });
  };

  if (o.decode_only > 0) {
    // Only batch-1 decode steps (graph replays) at decode_ctx: a clean trace for nsys.
    bool aliased = false;
    fill_plan(run, 1, 1, o.decode_ctx - 1, aliased);
    dspark::cuda::step_desc sd;
    sd.n_tokens = 1;
    sd.n_seqs = 1;
    sd.n_rows = 1;
    sd.max_kv_len = o.decode_ctx;
    sd.copy_logits = false;
    sd.argmax = true;
    const double ms = time_ms(s, 3, o.decode_only, [&] { run.run(sd, s); });
    std::printf("decode-only: split_len %d, batch 1, ctx %d: %.3f ms median of %d\n", o.split_len, o.decode_ctx, ms,
                o.decode_only);
    return;
  }
  if (o.kernels) {
    // Where a batch-1 step's time goes without a profiler: the time of each kernel kind alone,
    // n_layer launches (2 n_layer for the norm, as in the step) replayed from one graph with PDL
    // between them, against the whole step.
    const double floor1 = (wbytes + kvb * o.decode_ctx) / (ceil.copy_gbs * 1e9) * 1e3;
    const double gemv_floor = wbytes / (ceil.copy_gbs * 1e9) * 1e3;
    char buf[512];
    device_buffer xf(c.n_embd * 4), xb(std::max<int64_t>(c.n_ff, c.q_dim()) * 2),
        y(std::max<int64_t>(2ll * c.n_ff, c.qkv_dim()) * 2), yl(c.n_vocab * 4), hb(c.n_embd * 2),
        qo(c.q_dim() * 2), pos_slot(2 * 4);
    fill_uniform(xf.as<float>(), c.n_embd, 5, -1.f, 1.f, s);
    fill_uniform(xb.as<bf16_t>(), std::max<int64_t>(c.n_ff, c.q_dim()), 7, -1.f, 1.f, s);
    fill_uniform(y.as<bf16_t>(), std::max<int64_t>(2ll * c.n_ff, c.qkv_dim()), 8, -1.f, 1.f, s);
    const int32_t ps[2] = {o.decode_ctx - 1, o.decode_ctx - 1};  // position, KV slot
    DSPARK_CUDA_CHECK(cudaMemcpy(pos_slot.data(), ps, sizeof ps, cudaMemcpyHostToDevice));
    auto chain_ms = [&](const std::function<void(int)>& layer, bool lm_head) {
      cudaGraph_t graph = nullptr;
      cudaGraphExec_t exec = nullptr;
      DSPARK_CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
      {
        const pdl_scope pdl(true);
        for (int l = 0; l < c.n_layer; ++l) layer(l);
        if (lm_head) gemv_bf16(w.output, xb.as<bf16_t>(), 1, c.n_vocab, c.n_embd, yl.as<float>(), s);
      }
      DSPARK_CUDA_CHECK(cudaStreamEndCapture(s, &graph));
      DSPARK_CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
      const double ms = time_ms(s, 3, o.iters, [&] { DSPARK_CUDA_CHECK(cudaGraphLaunch(exec, s)); });
      (void)cudaGraphExecDestroy(exec);
      (void)cudaGraphDestroy(graph);
      return ms;
    };
    const double t_gemv = chain_ms([&](int l) {
      const gpu_layer& L = w.layers[l];
      gemv_bf16(L.wqkv, xb.as<bf16_t>(), 1, c.qkv_dim(), c.n_embd, y.as<bf16_t>(), s);
      gemv_bf16(L.wo, xb.as<bf16_t>(), 1, c.n_embd, c.q_dim(), y.as<bf16_t>(), s);
      gemv_bf16(L.w_gate_up, xb.as<bf16_t>(), 1, 2ll * c.n_ff, c.n_embd, y.as<bf16_t>(), s);
      gemv_bf16(L.w_down, xb.as<bf16_t>(), 1, c.n_embd, c.n_ff, y.as<bf16_t>(), s);
    }, true);
    const double t_norm = chain_ms([&](int l) {
      rms_norm_residual(xf.as<float>(), xb.as<bf16_t>(), w.layers[l].attn_norm, 1e-6f, hb.as<bf16_t>(), 1, c.n_embd, s);
      rms_norm_residual(xf.as<float>(), xb.as<bf16_t>(), w.layers[l].ffn_norm, 1e-6f, hb.as<bf16_t>(), 1, c.n_embd, s);
    }, false);
    const double t_silu = chain_ms([&](int) {
      silu_mul(y.as<bf16_t>(), y.as<bf16_t>() + c.n_ff, 2ll * c.n_ff, xb.as<bf16_t>(), 1, c.n_ff, s);
    }, false);
    const double t_rope = chain_ms([&](int l) {
      rope_kv_params rp;
      rp.qkv = y.as<bf16_t>();
      rp.qkv_stride = c.qkv_dim();
      rp.n_tokens = 1;
      rp.n_head = c.n_head;
      rp.n_kv_head = c.n_kv_head;
      rp.head_dim = c.head_dim;
      rp.n_rot = c.n_rot;
      rp.positions = pos_slot.as<int32_t>();
      rp.inv_freq = w.inv_freq;
      rp.pairing = c.pairing;
      rp.q_norm = w.layers[l].q_norm;
      rp.k_norm = w.layers[l].k_norm;
      rp.q_out = qo.as<bf16_t>();
      rp.k_cache = kv.k(l);
      rp.v_cache = kv.v(l);
      rp.block_size = kv.block_size();
      rp.n_cache_slots = static_cast<int64_t>(kv.n_blocks()) * kv.block_size();
      rp.slots = pos_slot.as<int32_t>() + 1;
      rope_qk_norm_kv_write(rp, s);
    }, false);
    gpu_runner_options rv = ro;
    rv.split_len = 32;
    gpu_runner runv(c, w, kv, rv);
    auto step = [&](int n_seqs, int q, int ctx) { return time_step(runv, n_seqs, q, ctx); };
    const double d1 = step(1, 1, o.decode_ctx), d8 = step(8, 1, o.decode_ctx);
    const double v4 = step(1, 4, 2048), v8 = step(1, 8, 2048);
    md += "## " + name + ": where a batch-1 step goes (graphs with PDL, split_len 32, context " +
          std::to_string(o.decode_ctx) + ")\n\n| part | ms per step | us per layer |\n|---|---|---|\n";
    const double rest = d1 - t_gemv - t_norm - t_silu - t_rope;
    for (auto [label, ms] : {std::pair<const char*, double>{"layer GEMVs + LM head, alone", t_gemv},
                             {"2 x RMSNorm per layer, alone", t_norm},
                             {"SwiGLU, alone", t_silu},
                             {"q/k norm + RoPE + KV write, alone", t_rope},
                             {"rest (attention + combine, embedding, final norm, argmax, overlap)", rest},
                             {"whole decode step", d1}}) {
      std::snprintf(buf, sizeof buf, "| %s | %.3f | %.1f |\n", label, ms, 1e3 * ms / c.n_layer);
      md += buf;
    }
    std::snprintf(buf, sizeof buf,
                  "\nWeights floor %.3f ms (GEMVs at %.1f%% of it); step floor %.3f ms: batch-1 step at %.1f%%. "
                  "Batch 8: %.3f ms; one sequence verifying 4 / 8 tokens at context 2048: %.3f / %.3f ms.\n\n",
                  gemv_floor, 100.0 * gemv_floor / t_gemv, floor1, 100.0 * floor1 / d1, d8, v4, v8);
    md += buf;
    std::printf("%s", md.c_str());
    std::fflush(stdout);
    j["step_parts"] = {{"gemvs_ms", t_gemv}, {"norms_ms", t_norm}, {"silu_ms", t_silu}, {"rope_ms", t_rope},
                       {"decode_b1_ms", d1}, {"decode_b8_ms", d8}, {"verify4_ctx2048_ms", v4},
                       {"verify8_ctx2048_ms", v8}, {"floor_b1_ms", floor1}, {"weights_floor_ms", gemv_floor}};
    md += gemv_md;  // the per-shape GEMV table measured before the weights were made
    j["gemv"] = jg;
    jall["models"].push_back(j);
    return;
  }
  if (o.pdl) {
    // Which steps programmatic dependent launch should cover (gpu_runner_options::pdl_max_tokens):
    // decode and verify shapes of 1..8 tokens, on a large and a launch-bound model.
    gpu_runner_options r_all = ro, r_none = ro;
    r_all.pdl_max_tokens = ro.max_tokens;
    r_none.use_pdl = false;
    gpu_runner run_all_pdl(c, w, kv, r_all), run_no_pdl(c, w, kv, r_none);
    md += "## " + name + ": PDL by step (context " + std::to_string(o.decode_ctx) +
          ", graphs; ms)\n\n| B | decode all | decode none | decode default | verify all | verify none | verify default |\n"
          "|---|---|---|---|---|---|---|\n";
    for (int B = 1; B <= k_gemv_max_tokens; ++B) {
      double t[6];
      int i = 0;
      for (auto [n_seqs, q] : {std::pair{B, 1}, std::pair{1, B}})
        for (gpu_runner* r : {&run_all_pdl, &run_no_pdl, &run}) t[i++] = time_step(*r, n_seqs, q, o.decode_ctx);
      char buf[200];
      std::snprintf(buf, sizeof buf, "| %d | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", B, t[0], t[1], t[2], t[3], t[4],
                    t[5]);
      md += buf;
      std::printf("%s", buf);
      std::fflush(stdout);
      j["pdl_by_step"].push_back({{"tokens", B}, {"decode_all_ms", t[0]}, {"decode_none_ms", t[1]},
                                  {"decode_default_ms", t[2]}, {"verify_all_ms", t[3]}, {"verify_none_ms", t[4]},
                                  {"verify_default_ms", t[5]}});
    }
    md += "\n";
    jall["models"].push_back(j);
    return;
  }
  if (o.sweep) {
    // Step times over the attention split length (fixed per runner for batch invariance): which
    // setting suits which deployment. One runner per split length.
    const double floor1 = (wbytes + kvb * o.decode_ctx) / (ceil.copy_gbs * 1e9) * 1e3;
    md += "## " + name + ": decode/verify sweep (graphs; batch-1 floor " + std::to_string(floor1).substr(0, 5) +
          " ms)\n\n| split_len | decode b1 ctx " + std::to_string(o.decode_ctx) +
          " ms | % of floor | decode b8 ms | verify 8 tok ctx 2048 ms | decode b32 ms | decode b128 ms |\n|---|---|---|---|---|---|---|\n";
    for (int sl : {32, 64, 128}) {
      gpu_runner_options rv = ro;
      rv.split_len = sl;
      gpu_runner runv(c, w, kv, rv);
      {
        auto step = [&](int n_seqs, int q, int ctx) { return time_step(runv, n_seqs, q, ctx); };
        const double d1 = step(1, 1, o.decode_ctx), d8 = step(8, 1, o.decode_ctx), v8 = step(1, 8, 2048);
        const double d32 = step(32, 1, o.decode_ctx), d128 = step(128, 1, o.decode_ctx);
        char buf[256];
        std::snprintf(buf, sizeof buf, "| %d | %.3f | %.1f%% | %.3f | %.3f | %.3f | %.3f |\n", sl, d1,
                      100.0 * floor1 / d1, d8, v8, d32, d128);
        md += buf;
        std::printf("%s", buf);
        std::fflush(stdout);
        j["sweep"].push_back({{"split_len", sl}, {"decode_b1_ms", d1}, {"decode_b8_ms", d8},
                              {"verify8_ctx2048_ms", v8}, {"decode_b32_ms", d32}, {"decode_b128_ms", d128},
                              {"floor_b1_ms", floor1}});
      }
    }
    md += "\n";
    jall["models"].push_back(j);
    return;
  }
  if (o.profile) {
    // Eager steps (a second runner without graphs shares weights and cache) so every kernel is
    // a separate launch for ncu; warmed up first (cuBLASLt plans, caches).
    for (int sl : {512, o.split_len}) {
      for (int q : {1, 8}) {
        gpu_runner_options pro = ro;
        pro.use_graphs = false;
        pro.split_len = sl;
        gpu_runner prun(c, w, kv, pro);
        bool aliased = false;
        fill_plan(prun, 1, q, 2048, aliased);
        dspark::cuda::step_desc sd;
        sd.n_tokens = q;
        sd.n_seqs = 1;
        sd.n_rows = q;
        sd.max_kv_len = 2048 + q;
        sd.copy_logits = false;
        sd.argmax = true;
        for (int i = 0; i < 3; ++i) prun.run(sd, s);
        DSPARK_CUDA_CHECK(cudaStreamSynchronize(s));
        DSPARK_CUDA_CHECK(cudaProfilerStart());
        prun.run(sd, s);
        DSPARK_CUDA_CHECK(cudaStreamSynchronize(s));
        DSPARK_CUDA_CHECK(cudaProfilerStop());
      }
    }
    std::printf("[bench_cuda] profile steps done\n");
    return;
  }

  // (b) decode
  md += "## " + name + ": decode (random bf16 weights, context " + std::to_string(o.decode_ctx) + ", CUDA graphs)\n\n";
  md += "| batch | step ms | tok/s | floor ms | % of floor |\n|---|---|---|---|---|\n";
  for (int B : o.quick ? std::vector<int>{1, 8} : std::vector<int>{1, 8, 32, 128}) {
    bool aliased = false;
    fill_plan(run, B, 1, o.decode_ctx - 1, aliased);
    dspark::cuda::step_desc sd;
    sd.n_tokens = B;
    sd.n_seqs = B;
    sd.n_rows = B;
    sd.max_kv_len = o.decode_ctx;
    sd.copy_logits = false;
    sd.argmax = true;
    const double ms = time_ms(s, 3, o.iters, [&] { run.run(sd, s); });
    const double bytes = wbytes + kvb * B * o.decode_ctx;
    const double floor_ms = bytes / (ceil.copy_gbs * 1e9) * 1e3;
    char buf[256];
    std::snprintf(buf, sizeof buf, "| %d | %.3f | %.1f | %.3f | %.1f%%%s |\n", B, ms, B / (ms * 1e-3), floor_ms,
                  100.0 * floor_ms / ms, aliased ? " (KV aliased)" : "");
    md += buf;
    std::printf("%s", buf);
    std::fflush(stdout);
    j["decode"].push_back({{"batch", B}, {"context", o.decode_ctx}, {"step_ms", ms}, {"tokens_per_s", B / (ms * 1e-3)},
                           {"floor_bytes", bytes}, {"floor_ms", floor_ms}, {"pct_of_floor", 100.0 * floor_ms / ms},
                           {"kv_aliased", aliased}});
  }
  md += "\n";
  {
    // The same batch-1 decode step and 8-token verify step without programmatic dependent
    // launch (separate runner, same weights and cache): what PDL is worth.
    // "on" = PDL for every step (pdl_max_tokens = max), "off" = none (the runner's default
    // covers steps of up to 8 tokens: the --pdl table).
    gpu_runner_options ro1 = ro, ro2 = ro;
    ro1.pdl_max_tokens = ro.max_tokens;
    ro2.use_pdl = false;
    gpu_runner run1(c, w, kv, ro1), run2(c, w, kv, ro2);
    md += "| step (context " + std::to_string(o.decode_ctx) + ", graphs) | PDL on ms | PDL off ms |\n|---|---|---|\n";
    for (int q : {1, 8}) {
      bool aliased = false;
      dspark::cuda::step_desc sd;
      sd.n_tokens = q;
      sd.n_seqs = 1;
      sd.n_rows = q;
      sd.max_kv_len = o.decode_ctx;
      sd.copy_logits = false;
      sd.argmax = true;
      fill_plan(run1, 1, q, o.decode_ctx - q, aliased);
      const double on = time_ms(s, 3, o.iters, [&] { run1.run(sd, s); });
      fill_plan(run2, 1, q, o.decode_ctx - q, aliased);
      const double off = time_ms(s, 3, o.iters, [&] { run2.run(sd, s); });
      char buf[160];
      std::snprintf(buf, sizeof buf, "| %d new token%s | %.3f | %.3f |\n", q, q > 1 ? "s" : "", on, off);
      md += buf;
      std::printf("%s", buf);
      j["pdl_ab"].push_back({{"q_len", q}, {"context", o.decode_ctx}, {"pdl_on_ms", on}, {"pdl_off_ms", off}});
    }
    md += "\n";
  }

  // (c) verify-cost curve
  md += "## " + name + ": verify cost (B new tokens in one step, q_len = min(B, " + std::to_string(o.verify_qlen) +
        ") per sequence, logits for all B)\n\n| context | B | seqs | step ms | steps/s | tok/s | bytes-floor ms | flops-floor ms |\n|---|---|---|---|---|---|---|---|\n";
  const std::vector<int> Bs = o.quick ? std::vector<int>{1, 2, 4, 8, 16, 32} : std::vector<int>{1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
  for (int ctx : o.quick ? std::vector<int>{2048} : std::vector<int>{512, 2048, 8192}) {
    for (int B : Bs) {
      const int q_len = std::min(B, o.verify_qlen);
      const int n_seqs = B / q_len;
      if (n_seqs > ro.max_seqs) continue;
      bool aliased = false;
      fill_plan(run, n_seqs, q_len, ctx, aliased);
      dspark::cuda::step_desc sd;
      sd.n_tokens = n_seqs * q_len;
      sd.n_seqs = n_seqs;
      sd.n_rows = sd.n_tokens;
      sd.max_kv_len = ctx + q_len;
      sd.copy_logits = false;
      sd.argmax = true;
      const int it = o.quick ? 5 : std::max(5, o.iters / 2);
      const double ms = time_ms(s, 3, it, [&] { run.run(sd, s); });  // 3 warm-ups: eager, capture, replay
      const double bytes = wbytes + kvb * n_seqs * (ctx + q_len);
      const double flops = 2.0 * (wbytes / 2) * sd.n_tokens +
                           4.0 * c.n_layer * c.n_head * c.head_dim * static_cast<double>(sd.n_tokens) * (ctx + 0.5 * q_len);
      const double floor_b = bytes / (ceil.copy_gbs * 1e9) * 1e3, floor_f = flops / (ceil.gemm_tflops * 1e12) * 1e3;
      char buf[256];
      std::snprintf(buf, sizeof buf, "| %d | %d | %d | %.3f | %.1f | %.0f | %.3f | %.3f |%s\n", ctx, sd.n_tokens, n_seqs, ms,
                    1e3 / ms, sd.n_tokens / (ms * 1e-3), floor_b, floor_f, aliased ? " KV aliased" : "");
      md += buf;
      std::printf("%s", buf);
      std::fflush(stdout);
      j["verify"].push_back({{"context", ctx}, {"new_tokens", sd.n_tokens}, {"seqs", n_seqs}, {"q_len", q_len},
                             {"step_ms", ms}, {"steps_per_s", 1e3 / ms}, {"bytes_floor_ms", floor_b},
                             {"flops_floor_ms", floor_f}, {"kv_aliased", aliased}});
    }
  }
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "\n## %s: memory\n\n| GPU total GiB | weights GiB | KV pool GiB | runner GiB | free after GiB | KV capacity (tokens) |\n|---|---|---|---|---|---|\n| %.1f | %.2f | %.2f | %.2f | %.2f | %lld |\n\n",
                name.c_str(), total / 1073741824.0, w.bytes() / 1073741824.0, kv.bytes() / 1073741824.0,
                run.device_bytes() / 1073741824.0, free2 / 1073741824.0,
                static_cast<long long>(kv.n_blocks()) * bs);
  md += buf;
  md += gemv_md;
  j["gemv"] = jg;
  j["graphs_captured"] = run.graphs_captured();
  jall["models"].push_back(j);
}

int run_all(const options& o) {
  cudaDeviceProp prop{};
  DSPARK_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  stream st;
  nlohmann::json j;
  j["device"] = {{"name", prop.name}, {"sm_count", prop.multiProcessorCount}, {"l2_bytes", prop.l2CacheSize},
                 {"cc", std::to_string(prop.major) + "." + std::to_string(prop.minor)}};
  std::string md = std::string("# bench_cuda on ") + prop.name + "\n\n";
  const ceilings c = measure_ceilings(st.get(), o.iters, j, md);
  std::printf("[bench_cuda] copy %.0f GB/s, bf16 GEMM %.0f TFLOP/s\n", c.copy_gbs, c.gemm_tflops);
  for (const auto& m : o.models) {
    bench_model(m, o, c, st.get(), j, md);
    if (o.quick || o.profile || o.sweep || o.decode_only > 0) break;  // first model only (--kernels: all)
  }
  std::filesystem::create_directories(o.out);
  std::ofstream(o.out + "/bench_cuda.md") << md;
  std::ofstream(o.out + "/bench_cuda.json") << j.dump(2) << "\n";
  std::printf("\n%s", md.c_str());
  return 0;
}

}  // namespace
#endif

int main(int argc, char** argv) {
  try {
    const options o = parse(argc, argv);
#if DSPARK_HAVE_CUDA
    if (!dspark::cuda::device_available()) {
      std::printf("no CUDA device\n");
      return 0;
    }
    return run_all(o);
#else
    (void)o;
    std::printf("no CUDA device (built without CUDA)\n");
    return 0;
#endif
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_cuda: %s\n", e.what());
    return 1;
  }
}

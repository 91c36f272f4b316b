// bench_gemm_algos: where a verify step's cost jumps with its token count, GEMM by GEMM.
//
//   bench_gemm_algos --out DIR [--model qwen3-8b] [--tokens 64,72,128,136,256] [--candidates 64]
//                    [--iters 7] [--enumerate 2000]
//
// On the Qwen3-8B shape a 72-row step costs 13.6% more than a 64-row one and a 136-row step 43%
// more than a 128-row one (docs/benchmarks.md, fourteenth session), and timing the heuristic's
// first 16 cuBLASLt algorithms did not remove either jump. A jump of that size is what reading
// every weight twice costs: a tile of 64 or 128 token columns leaves the 8 extra rows in a second
// column of tiles that streams the weights again. This program says whether the GEMMs explain it
// and whether cuBLASLt has a configuration that avoids it. For each linear shape of the model
// (fused QKV, output projection, fused gate/up, down, LM head) and each token count:
//   - the weights-once floor: the weight bytes over the measured copy bandwidth;
//   - the heuristic's first algorithm, and the fastest of its first --candidates;
//   - with --enumerate N > 0, up to N further configurations: every algorithm id cuBLASLt has for
//     these types, each of its tiles, stage counts and split-K factors 1-8 (cluster shape auto),
//     accepted by cublasLtMatmulAlgoCheck, screened with 3 runs each, the 8 fastest timed again;
// and the per-layer sum (times n_layer, plus the LM head) for each column, so the jumps can be
// set against the step profile's. Weights are rotated among copies filling 4x the L2 cache, so
// no timing reads them from L2. Times are medians of --iters runs after a warm-up, CUDA events.
// Configurations are printed as cuBLASLt's enum values (kernels/cuda/cublaslt_config.h):
// cublasLt.h names them (CUBLASLT_MATMUL_TILE_*, CUBLASLT_MATMUL_STAGES_*).
// Writes DIR/bench_gemm_algos.md and .json. Without a CUDA device it says so and exits 0.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#if DSPARK_HAVE_CUDA
#include <cublasLt.h>

#include "engine/cuda/gpu_weights.h"
#include "kernels/cuda/cublaslt_config.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/random_fill.h"
#include "models/arch/synthetic_model.h"
#endif

namespace {

struct options {
  std::string out = "bench_gemm_algos_out";
  std::string model = "qwen3-8b";
  std::vector<int> tokens = {64, 72, 128, 136, 256};
  int candidates = 64;
  int iters = 7;
  int enumerate = 2000;
};

std::vector<int> parse_int_list(const std::string& s) {
  std::vector<int> v;
  std::stringstream ss(s);
  for (std::string t; std::getline(ss, t, ',');) {
    const int n = std::stoi(t);
    if (n < 1 || n > 65536) throw std::invalid_argument("token count out of range: " + t);
    v.push_back(n);
  }
  if (v.empty()) throw std::invalid_argument("--tokens: empty list");
  return v;
}

}  // namespace

#if DSPARK_HAVE_CUDA
namespace {

using namespace dspark::cuda;
using bf16_t = __nv_bfloat16;

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

struct linear_shape {
  std::string name;
  int64_t n_out, n_in;
  int per_step;  // times per step (n_layer for layer matrices, 1 for the head)
  bool f32_out;  // the LM head writes float logits
};

// A measured configuration.
struct timing {
  double us = -1;
  cublaslt_config cfg;
  int rank = -1;  // index in the heuristic's list, -1 for an enumerated one
};

class gemm_case {
 public:
  gemm_case(cublasLtHandle_t h, const linear_shape& s, int64_t n_tokens, const std::vector<device_buffer>& w,
            const device_buffer& x, device_buffer& y, device_buffer& ws, cudaStream_t stream, int iters)
      : h_(h), s_(s), n_tokens_(n_tokens), w_(w), x_(x), y_(y), ws_(ws), stream_(stream), iters_(iters) {
    const cudaDataType_t out = s.f32_out ? CUDA_R_32F : CUDA_R_16BF;
    DSPARK_CUBLAS_CHECK(cublasLtMatmulDescCreate(&op_, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    DSPARK_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
    DSPARK_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(op_, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
    DSPARK_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&a_, CUDA_R_16BF, s.n_in, s.n_out, s.n_in));
    DSPARK_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&b_, CUDA_R_16BF, s.n_in, n_tokens, s.n_in));
    DSPARK_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&c_, out, s.n_out, n_tokens, s.n_out));
  }
  ~gemm_case() {
    cublasLtMatrixLayoutDestroy(c_);
    cublasLtMatrixLayoutDestroy(b_);
    cublasLtMatrixLayoutDestroy(a_);
    cublasLtMatmulDescDestroy(op_);
  }
  gemm_case(const gemm_case&) = delete;
  gemm_case& operator=(const gemm_case&) = delete;

  std::vector<cublasLtMatmulHeuristicResult_t> heuristic(int n) const {
    cublasLtMatmulPreference_t pref = nullptr;
    DSPARK_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const size_t wsb = ws_.bytes();
    DSPARK_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &wsb, sizeof wsb));
    std::vector<cublasLtMatmulHeuristicResult_t> r(n);
    int got = 0;
    const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h_, op_, a_, b_, c_, c_, pref, n, r.data(), &got);
    cublasLtMatmulPreferenceDestroy(pref);
    DSPARK_CUBLAS_CHECK(st);
    r.resize(got);
    return r;
  }

  void set_iters(int n) { iters_ = n; }

  bool accepts(const cublasLtMatmulAlgo_t& algo) const {
    cublasLtMatmulHeuristicResult_t check{};
    return cublasLtMatmulAlgoCheck(h_, op_, a_, b_, c_, c_, &algo, &check) == CUBLAS_STATUS_SUCCESS &&
           check.state == CUBLAS_STATUS_SUCCESS && check.workspaceSize <= ws_.bytes();
  }

  // Median microseconds of one GEMM, each run on the next weight copy; -1 when cuBLASLt refuses.
  double time_us(const cublasLtMatmulAlgo_t& algo) {
    const float alpha = 1.f, beta = 0.f;
    size_t copy = 0;
    auto once = [&] {
      const cublasStatus_t st = cublasLtMatmul(h_, op_, &alpha, w_[copy].data(), a_, x_.data(), b_, &beta,
                                               y_.data(), c_, y_.data(), c_, &algo, ws_.data(), ws_.bytes(), stream_);
      copy = (copy + 1) % w_.size();
      return st == CUBLAS_STATUS_SUCCESS;
    };
    if (!once()) {
      (void)cudaGetLastError();
      return -1;
    }
    DSPARK_CUDA_CHECK(cudaStreamSynchronize(stream_));
    std::vector<double> t;
    for (int i = 0; i < iters_; ++i) {
      a_ev_.record(stream_);
      if (!once()) return -1;
      b_ev_.record(stream_);
      b_ev_.synchronize();
      t.push_back(1e3 * b_ev_.elapsed_ms_since(a_ev_));
    }
    return median(t);
  }

 private:
  cublasLtHandle_t h_;
  const linear_shape& s_;
  int64_t n_tokens_;
  const std::vector<device_buffer>& w_;
  const device_buffer& x_;
  device_buffer& y_;
  device_buffer& ws_;
  cudaStream_t stream_;
  int iters_;
  cublasLtMatmulDesc_t op_ = nullptr;
  cublasLtMatrixLayout_t a_ = nullptr, b_ = nullptr, c_ = nullptr;
  event a_ev_, b_ev_;
};

// Every (algorithm id, tile, stages, split-K) cuBLASLt lists for bf16 in, fp32 compute, `out_type`
// out; split-K in {1, 2, 4, 8} where the algorithm reduces it in float32 (a wide tile with few
// tiles along the weights needs it to keep every SM streaming; kernels/cuda/cublaslt_config.h).
std::vector<cublasLtMatmulAlgo_t> enumerate_configs(cublasLtHandle_t h, cudaDataType_t out_type) {
  std::vector<int> ids(256);
  int n_ids = 0;
  DSPARK_CUBLAS_CHECK(cublasLtMatmulAlgoGetIds(h, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, out_type,
                                               out_type, static_cast<int>(ids.size()), ids.data(), &n_ids));
  // (order key, configuration): every (id, tile) with its first stage count and no split before
  // any later variant, so a capped run still sees every tile.
  std::vector<std::pair<size_t, cublasLtMatmulAlgo_t>> all;
  for (int i = 0; i < n_ids; ++i) {
    cublasLtMatmulAlgo_t algo{};
    if (cublasLtMatmulAlgoInit(h, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16BF, CUDA_R_16BF, out_type, out_type, ids[i],
                               &algo) != CUBLAS_STATUS_SUCCESS)
      continue;
    // An algorithm that lists no tiles or stages runs with its own choice (0, undefined).
    auto or_undefined = [](std::vector<uint32_t> v) { return v.empty() ? std::vector<uint32_t>{0} : v; };
    const std::vector<int32_t> splits =
        splits_in_float32(algo) ? std::vector<int32_t>{1, 2, 4, 8} : std::vector<int32_t>{1};
    const std::vector<uint32_t> stages = or_undefined(stage_ids(algo));
    for (uint32_t tile : or_undefined(tile_ids(algo)))
      for (size_t k = 0; k < stages.size(); ++k)
        for (size_t si = 0; si < splits.size(); ++si)
          all.push_back({k * splits.size() + si, with_config(algo, tile, stages[k], splits[si])});
  }
  std::stable_sort(all.begin(), all.end(), [](const auto& l, const auto& r) { return l.first < r.first; });
  std::vector<cublasLtMatmulAlgo_t> out;
  for (const auto& [k, a] : all) out.push_back(a);
  return out;
}

double copy_bandwidth_gbs(cudaStream_t s) {
  const size_t bytes = 1ull << 30;
  device_buffer a(bytes), b(bytes);
  fill_uniform(a.as<float>(), static_cast<int64_t>(bytes / 4), 1, -1.f, 1.f, s);
  event e0, e1;
  std::vector<double> t;
  for (int i = 0; i < 8; ++i) {
    e0.record(s);
    DSPARK_CUDA_CHECK(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, s));
    e1.record(s);
    e1.synchronize();
    if (i >= 2) t.push_back(e1.elapsed_ms_since(e0));
  }
  return 2.0 * bytes / (median(t) * 1e-3) / 1e9;
}

int run(const options& o) {
  int n_dev = 0;
  if (cudaGetDeviceCount(&n_dev) != cudaSuccess || n_dev == 0) {
    std::printf("no CUDA device\n");
    return 0;
  }
  cudaDeviceProp prop{};
  DSPARK_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  const gpu_model_config c = gpu_config_from(dspark::synthetic_shape_config(o.model));
  const std::vector<linear_shape> shapes = {
      {"qkv", c.qkv_dim(), c.n_embd, c.n_layer, false},
      {"o", c.n_embd, c.q_dim(), c.n_layer, false},
      {"gate_up", 2ll * c.n_ff, c.n_embd, c.n_layer, false},
      {"down", c.n_embd, c.n_ff, c.n_layer, false},
      {"lm_head", c.n_vocab, c.n_embd, 1, true},
  };
  stream st;
  const cudaStream_t s = st.get();
  const double bw = copy_bandwidth_gbs(s);
  cublasLtHandle_t h = nullptr;
  DSPARK_CUBLAS_CHECK(cublasLtCreate(&h));
  device_buffer ws(32u << 20);
  const int max_tokens = *std::max_element(o.tokens.begin(), o.tokens.end());
  int64_t max_in = 0, max_out = 0;
  for (const auto& sh : shapes) max_in = std::max(max_in, sh.n_in), max_out = std::max(max_out, sh.n_out);
  device_buffer x(max_tokens * max_in * 2), y(max_tokens * max_out * 4);
  fill_uniform(x.as<bf16_t>(), max_tokens * max_in, 7, -1.f, 1.f, s);

  nlohmann::json j;
  j["device"] = prop.name;
  j["model"] = o.model;
  j["copy_gbs"] = bw;
  std::string md = "# cuBLASLt configurations by token count: " + o.model + " on " + prop.name + "\n\n";
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "Copy bandwidth %.0f GB/s (read + write); floor = weight bytes / that. Heuristic: its first of "
                "%d candidates and the fastest of them; enumerated: up to %d further configurations. Medians of %d "
                "runs, us.\n\n| shape | tokens | floor | heuristic #0 | best heuristic (rank) | best enumerated | "
                "configuration of the fastest |\n|---|---|---|---|---|---|---|\n",
                bw, o.candidates, o.enumerate, o.iters);
  md += buf;
  // Per token count: step sums of the three columns (ms).
  std::vector<double> sum_first(o.tokens.size()), sum_best(o.tokens.size()), sum_floor(o.tokens.size());
  for (const auto& sh : shapes) {
    const size_t wbytes = static_cast<size_t>(sh.n_out) * sh.n_in * 2;
    const size_t n_copies = std::max<size_t>(2, (4ull * prop.l2CacheSize + wbytes - 1) / wbytes);
    std::vector<device_buffer> w;
    for (size_t i = 0; i < n_copies; ++i) {
      w.emplace_back(wbytes);
      fill_uniform(w.back().as<bf16_t>(), sh.n_out * sh.n_in, 100 + i, -0.02f, 0.02f, s);
    }
    const std::vector<cublasLtMatmulAlgo_t> enumerated =
        o.enumerate > 0 ? enumerate_configs(h, sh.f32_out ? CUDA_R_32F : CUDA_R_16BF) : std::vector<cublasLtMatmulAlgo_t>{};
    for (size_t ti = 0; ti < o.tokens.size(); ++ti) {
      const int n_tokens = o.tokens[ti];
      gemm_case g(h, sh, n_tokens, w, x, y, ws, s, o.iters);
      const auto heur = g.heuristic(o.candidates);
      timing first, best_h, best_e;
      nlohmann::json jc = {{"shape", sh.name}, {"tokens", n_tokens}, {"n_out", sh.n_out}, {"n_in", sh.n_in}};
      for (size_t r = 0; r < heur.size(); ++r) {
        const double us = g.time_us(heur[r].algo);
        jc["heuristic"].push_back({{"us", us}, {"config", config_of(heur[r].algo).str()}});
        if (us < 0) continue;
        if (r == 0) first = {us, config_of(heur[r].algo), 0};
        if (best_h.us < 0 || us < best_h.us) best_h = {us, config_of(heur[r].algo), static_cast<int>(r)};
      }
      // Enumerated configurations: screened with 3 runs each, the 8 fastest timed again in full.
      int timed = 0;
      std::vector<std::pair<double, cublasLtMatmulAlgo_t>> screened;
      g.set_iters(3);
      for (const auto& a : enumerated) {
        if (timed >= o.enumerate) break;
        if (!g.accepts(a)) continue;
        ++timed;
        const double us = g.time_us(a);
        if (us >= 0) screened.push_back({us, a});
      }
      g.set_iters(o.iters);
      std::sort(screened.begin(), screened.end(), [](const auto& l, const auto& r) { return l.first < r.first; });
      for (size_t k = 0; k < std::min<size_t>(8, screened.size()); ++k) {
        const double us = g.time_us(screened[k].second);
        jc["enumerated_top"].push_back({{"us", us}, {"config", config_of(screened[k].second).str()}});
        if (us >= 0 && (best_e.us < 0 || us < best_e.us)) best_e = {us, config_of(screened[k].second), -1};
      }
      // The project's floor (docs/benchmarks.md): bytes over the copy rate, reads and writes
      // counted alike.
      const double floor_us = wbytes / (bw * 1e9) * 1e6;
      const timing& fastest = best_e.us >= 0 && (best_h.us < 0 || best_e.us < best_h.us) ? best_e : best_h;
      char enumerated_cell[64] = "-";
      if (best_e.us >= 0) std::snprintf(enumerated_cell, sizeof enumerated_cell, "%.1f of %d", best_e.us, timed);
      std::snprintf(buf, sizeof buf, "| %s | %d | %.1f | %.1f | %.1f (%d) | %s | %s |\n", sh.name.c_str(), n_tokens,
                    floor_us, first.us, best_h.us, best_h.rank, enumerated_cell, fastest.cfg.str().c_str());
      md += buf;
      std::printf("%s", buf);
      std::fflush(stdout);
      jc["floor_us"] = floor_us;
      jc["first_us"] = first.us;
      jc["best_heuristic_us"] = best_h.us;
      jc["best_enumerated_us"] = best_e.us;
      jc["enumerated_timed"] = timed;
      jc["fastest_config"] = fastest.cfg.str();
      j["cases"].push_back(jc);
      // A shape no configuration ran on (-1) makes its token count's sums NaN, not a smaller sum.
      const double nan = std::numeric_limits<double>::quiet_NaN();
      sum_first[ti] += first.us >= 0 ? 1e-3 * first.us * sh.per_step : nan;
      sum_best[ti] += fastest.us >= 0 ? 1e-3 * fastest.us * sh.per_step : nan;
      sum_floor[ti] += 1e-3 * floor_us * sh.per_step;
    }
  }
  md += "\n## A step's GEMMs (n_layer x the four layer shapes + the LM head), ms\n\n| tokens | floor | heuristic "
        "#0 | fastest found |\n|---|---|---|---|\n";
  for (size_t ti = 0; ti < o.tokens.size(); ++ti) {
    std::snprintf(buf, sizeof buf, "| %d | %.3f | %.3f | %.3f |\n", o.tokens[ti], sum_floor[ti], sum_first[ti],
                  sum_best[ti]);
    md += buf;
    j["step_sums"].push_back(
        {{"tokens", o.tokens[ti]}, {"floor_ms", sum_floor[ti]}, {"first_ms", sum_first[ti]}, {"best_ms", sum_best[ti]}});
  }
  std::printf("%s", md.substr(md.find("\n## A step")).c_str());
  cublasLtDestroy(h);
  std::filesystem::create_directories(o.out);
  std::ofstream(o.out + "/bench_gemm_algos.md") << md;
  std::ofstream(o.out + "/bench_gemm_algos.json") << j.dump(1) << "\n";
  return 0;
}

}  // namespace
#endif

int main(int argc, char** argv) {
  options o;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto next = [&]() -> std::string {
        if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
        return argv[++i];
      };
      if (a == "--out") o.out = next();
      else if (a == "--model") o.model = next();
      else if (a == "--tokens") o.tokens = parse_int_list(next());
      else if (a == "--candidates") o.candidates = std::clamp(std::stoi(next()), 1, 256);
      else if (a == "--iters") o.iters = std::clamp(std::stoi(next()), 1, 1000);
      else if (a == "--enumerate") o.enumerate = std::max(0, std::stoi(next()));
      else if (a == "--help" || a == "-h") {
        std::printf("usage: bench_gemm_algos --out DIR [--model qwen3-8b] [--tokens 64,72,128,136,256] "
                    "[--candidates 64] [--iters 7] [--enumerate 2000]\n");
        return 0;
      } else {
        throw std::invalid_argument("unknown argument " + a);
      }
    }
#if DSPARK_HAVE_CUDA
    return run(o);
#else
    std::printf("no CUDA device (built without CUDA)\n");
    return 0;
#endif
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_gemm_algos: %s\n", e.what());
    return 2;
  }
}

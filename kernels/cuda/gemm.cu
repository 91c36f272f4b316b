// cuBLASLt bf16 GEMM with float32 accumulation (see gemm.h).
//
// cuBLASLt is column-major. A row-major weight W [n_out, n_in] is, read column-major, the
// matrix W^T of shape [n_in, n_out] with leading dimension n_in; likewise x [n_tokens, n_in] is
// X^T [n_in, n_tokens]. So y^T [n_out, n_tokens] (= row-major y) = op(A) * B with A = W^T
// stored (transa = T), B = X^T (transb = N), m = n_out, n = n_tokens, k = n_in.
#include "kernels/cuda/gemm.h"

#include <cublasLt.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "common/whole_number.h"
#include "kernels/cuda/cublaslt_config.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_buffer.h"

namespace dspark::cuda {

namespace {

struct plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  void destroy() {
    if (op) cublasLtMatmulDescDestroy(op);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (c) cublasLtMatrixLayoutDestroy(c);
  }
};

// n_tokens, n_out, n_in, out type, common pointer alignment (bytes, power of two <= 256)
using plan_key = std::tuple<int64_t, int64_t, int64_t, int, uint32_t>;

uint32_t alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  uint32_t al = 256;
  while (al > 1 && a % al != 0) al >>= 1;
  return al;
}

// A DSPARK_GEMM_* value: the default when unset or empty, else a whole number in [lo, hi].
int32_t tuning_value(const char* name, const char* v, int32_t fallback, int32_t lo, int32_t hi) {
  if (v == nullptr || *v == '\0') return fallback;
  const std::optional<int32_t> n = whole_number<int32_t>(v);
  if (!n || *n < lo || *n > hi) {
    throw std::invalid_argument(std::string(name) + " must be an integer in [" + std::to_string(lo) + ", " +
                                std::to_string(hi) + "], not '" + v + "'");
  }
  return *n;
}

constexpr int k_max_candidates = 64;
using candidate_list = std::array<cublasLtMatmulHeuristicResult_t, k_max_candidates>;

// The operands of the call that first meets a shape: timing runs on them.
struct call_operands {
  const void* w;
  const void* x;
  void* y;
  float beta;
  cudaStream_t stream;
};

}  // namespace

gemm_tuning gemm_tuning::parse(const char* candidates, const char* max_tokens, const char* variants) {
  gemm_tuning t;
  t.candidates = tuning_value("DSPARK_GEMM_TUNE", candidates, t.candidates, 1, k_max_candidates);
  t.max_tokens = tuning_value("DSPARK_GEMM_TUNE_MAX_TOKENS", max_tokens, static_cast<int32_t>(t.max_tokens), 0, 1 << 20);
  t.variants = tuning_value("DSPARK_GEMM_VARIANTS", variants, t.variants, 0, 16);
  return t;
}

gemm_tuning gemm_tuning::from_env() {
  static const gemm_tuning t = parse(std::getenv("DSPARK_GEMM_TUNE"), std::getenv("DSPARK_GEMM_TUNE_MAX_TOKENS"),
                                     std::getenv("DSPARK_GEMM_VARIANTS"));
  return t;
}

struct gemm_context::impl {
  cublasLtHandle_t handle = nullptr;
  device_buffer workspace;
  gemm_tuning tuning;
  cudaEvent_t ev_start = nullptr, ev_stop = nullptr;
  gemm_tuning_stats stats;
  mutable std::mutex mu;
  std::map<plan_key, plan> plans;
  // The timed choice per bucket of 8 token counts (key: the bucket's largest count): a shape
  // whose bucket was timed takes that algorithm when cuBLASLt accepts it for the shape, so a
  // verifier's ragged steps pay one timing per 8 counts, not one per count.
  std::map<plan_key, cublasLtMatmulAlgo_t> timed_by_bucket;

  ~impl() {
    for (auto& [k, p] : plans) p.destroy();
    if (ev_start) cudaEventDestroy(ev_start);
    if (ev_stop) cudaEventDestroy(ev_stop);
    if (handle) cublasLtDestroy(handle);
  }

  cublasStatus_t matmul(const plan& p, const cublasLtMatmulAlgo_t& algo, const call_operands& c) {
    const float alpha = 1.f;
    return cublasLtMatmul(handle, p.op, &alpha, c.w, p.a, c.x, p.b, &c.beta, c.y, p.c, c.y, p.c, &algo,
                          workspace.data(), workspace.bytes(), c.stream);
  }

  bool capturing(cudaStream_t s) const {
    cudaStreamCaptureStatus st = cudaStreamCaptureStatusNone;
    DSPARK_CUDA_CHECK(cudaStreamIsCapturing(s, &st));
    return st != cudaStreamCaptureStatusNone;
  }

  // Times each candidate (one warm-up run, then three timed back to back) on the call's own
  // operands and returns the index of the fastest. A candidate cuBLASLt refuses at run time is
  // skipped. beta == 0, so every run fully overwrites y and the real call then writes it again.
  int fastest(const plan& p, const candidate_list& cands, int n, const call_operands& c) {
    const auto t0 = std::chrono::steady_clock::now();
    int best = 0;
    float best_ms = -1.f;
    for (int i = 0; i < n; ++i) {
      if (matmul(p, cands[i].algo, c) != CUBLAS_STATUS_SUCCESS) continue;
      DSPARK_CUDA_CHECK(cudaEventRecord(ev_start, c.stream));
      bool ok = true;
      for (int r = 0; r < 3 && ok; ++r) ok = matmul(p, cands[i].algo, c) == CUBLAS_STATUS_SUCCESS;
      DSPARK_CUDA_CHECK(cudaEventRecord(ev_stop, c.stream));
      DSPARK_CUDA_CHECK(cudaEventSynchronize(ev_stop));
      float ms = 0;
      DSPARK_CUDA_CHECK(cudaEventElapsedTime(&ms, ev_start, ev_stop));
      if (ok && (best_ms < 0 || ms < best_ms)) {
        best_ms = ms;
        best = i;
      }
    }
    DSPARK_CUDA_CHECK(cudaGetLastError());
    stats.shapes_timed += 1;
    stats.shapes_changed += best != 0;
    stats.ms_spent += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    return best;
  }

  // Appends to cands[n..] the tile and split-K variants of its first `from` entries (same
  // algorithm, same stages) that cuBLASLt accepts for p's shape within the workspace, skipping
  // configurations already listed, until the list is full. Returns the new count.
  int add_variants(const plan& p, candidate_list& cands, int n, int from) {
    std::vector<cublaslt_config> seen;
    for (int i = 0; i < n; ++i) seen.push_back(config_of(cands[i].algo));
    const int n0 = n;
    for (int i = 0; i < std::min(from, n0); ++i) {
      const cublasLtMatmulAlgo_t base = cands[i].algo;
      const uint32_t stages = seen[static_cast<size_t>(i)].stages;
      const std::vector<int32_t> splits =
          splits_in_float32(base) ? std::vector<int32_t>{1, 2, 4} : std::vector<int32_t>{1};
      for (uint32_t tile : tile_ids(base)) {
        for (int32_t split : splits) {
          if (n >= k_max_candidates) return n;
          const cublasLtMatmulAlgo_t a = with_config(base, tile, stages, split);
          const cublaslt_config c = config_of(a);
          if (std::find(seen.begin(), seen.end(), c) != seen.end()) continue;
          cublasLtMatmulHeuristicResult_t check{};
          if (cublasLtMatmulAlgoCheck(handle, p.op, p.a, p.b, p.c, p.c, &a, &check) != CUBLAS_STATUS_SUCCESS ||
              check.workspaceSize > workspace.bytes())
            continue;
          seen.push_back(c);
          cands[n] = check;
          cands[n].algo = a;
          ++n;
        }
      }
    }
    return n;
  }

  const plan& get(int64_t n_tokens, int64_t n_out, int64_t n_in, cudaDataType_t out_type, uint32_t align,
                  const call_operands& call) {
    std::lock_guard<std::mutex> lock(mu);
    const plan_key key{n_tokens, n_out, n_in, static_cast<int>(out_type), align};
    auto it = plans.find(key);
    if (it != plans.end()) return it->second;
    plan p;
    try {
      DSPARK_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
      const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
      DSPARK_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta));
      DSPARK_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb));
      DSPARK_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16BF, n_in, n_out, n_in));
      DSPARK_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16BF, n_in, n_tokens, n_in));
      DSPARK_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, out_type, n_out, n_tokens, n_out));
      const size_t ws = workspace.bytes();
      const bool timed = tuning.candidates > 1 && n_tokens <= tuning.max_tokens && call.beta == 0.f &&
                         !capturing(call.stream);
      const plan_key bucket{(n_tokens + 7) / 8 * 8, n_out, n_in, static_cast<int>(out_type), align};
      if (timed) {
        auto b = timed_by_bucket.find(bucket);
        cublasLtMatmulHeuristicResult_t check{};
        if (b != timed_by_bucket.end() &&
            cublasLtMatmulAlgoCheck(handle, p.op, p.a, p.b, p.c, p.c, &b->second, &check) == CUBLAS_STATUS_SUCCESS &&
            check.workspaceSize <= ws) {
          p.algo = b->second;
          stats.shapes_reused += 1;
          return plans.emplace(key, p).first->second;
        }
      }
      cublasLtMatmulPreference_t pref = nullptr;
      DSPARK_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      candidate_list results{};
      int n_results = 0;
      cublasStatus_t st1 = cublasLtMatmulPreferenceSetAttribute(
          pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
      // The heuristic assumes 256-byte aligned operands unless told otherwise.
      for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
        if (st1 == CUBLAS_STATUS_SUCCESS) st1 = cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof align);
      }
      const cublasStatus_t st2 = st1 == CUBLAS_STATUS_SUCCESS
                                     ? cublasLtMatmulAlgoGetHeuristic(handle, p.op, p.a, p.b, p.c, p.c, pref,
                                                                      timed ? tuning.candidates : 1,
                                                                      results.data(), &n_results)
                                     : st1;
      cublasLtMatmulPreferenceDestroy(pref);
      DSPARK_CUBLAS_CHECK(st2);
      if (n_results == 0) {
        throw cuda_error("cuBLASLt: no algorithm for bf16 GEMM n_tokens=" + std::to_string(n_tokens) +
                         " n_out=" + std::to_string(n_out) + " n_in=" + std::to_string(n_in));
      }
      const int n_heuristic = n_results;
      if (timed && tuning.variants > 0) {
        n_results = add_variants(p, results, n_results, tuning.variants);
        stats.variants_timed += n_results - n_heuristic;
      }
      const int chosen = timed && n_results > 1 ? fastest(p, results, n_results, call) : 0;
      stats.variants_chosen += chosen >= n_heuristic;
      p.algo = results[chosen].algo;
      if (timed) timed_by_bucket[bucket] = p.algo;
    } catch (...) {
      p.destroy();
      throw;
    }
    return plans.emplace(key, p).first->second;
  }

  void run(const void* w, const void* x, int64_t n_tokens, int64_t n_out, int64_t n_in, void* y,
           cudaDataType_t out_type, float beta, cudaStream_t stream) {
    DSPARK_CUDA_REQUIRE(n_tokens >= 0 && n_out > 0 && n_in > 0 && n_in % 8 == 0,
                        "gemm: bad shape (n_in must be a positive multiple of 8)");
    if (n_tokens == 0) return;
    DSPARK_CUDA_REQUIRE(w && x && y, "gemm: null pointer");
    const uint32_t align = std::min({alignment_of(w), alignment_of(x), alignment_of(y)});
    const call_operands call{w, x, y, beta, stream};
    const plan& p = get(n_tokens, n_out, n_in, out_type, align, call);
    DSPARK_CUBLAS_CHECK(matmul(p, p.algo, call));
  }
};

gemm_context::gemm_context(size_t workspace_bytes, gemm_tuning tuning) : impl_(std::make_unique<impl>()) {
  DSPARK_CUBLAS_CHECK(cublasLtCreate(&impl_->handle));
  impl_->workspace = device_buffer(workspace_bytes);
  impl_->tuning = tuning;
  DSPARK_CUDA_CHECK(cudaEventCreate(&impl_->ev_start));
  DSPARK_CUDA_CHECK(cudaEventCreate(&impl_->ev_stop));
}

gemm_tuning_stats gemm_context::tuning_stats() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->stats;
}

gemm_context::~gemm_context() = default;

void gemm_context::gemm(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n_tokens, int64_t n_out,
                        int64_t n_in, __nv_bfloat16* y, cudaStream_t stream) {
  impl_->run(w, x, n_tokens, n_out, n_in, y, CUDA_R_16BF, 0.f, stream);
}

void gemm_context::gemm(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n_tokens, int64_t n_out,
                        int64_t n_in, float* y, float beta, cudaStream_t stream) {
  impl_->run(w, x, n_tokens, n_out, n_in, y, CUDA_R_32F, beta, stream);
}

}  // namespace dspark::cuda

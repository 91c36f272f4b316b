// cuBLASLt bf16 GEMM with float32 accumulation (see gemm.h).
//
// cuBLASLt is column-major. A row-major weight W [n_out, n_in] is, read column-major, the
// matrix W^T of shape [n_in, n_out] with leading dimension n_in; likewise x [n_tokens, n_in] is
// X^T [n_in, n_tokens]. So y^T [n_out, n_tokens] (= row-major y) = op(A) * B with A = W^T
// stored (transa = T), B = X^T (transb = N), m = n_out, n = n_tokens, k = n_in.
#include "kernels/cuda/gemm.h"

#include <cublasLt.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

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

}  // namespace

struct gemm_context::impl {
  cublasLtHandle_t handle = nullptr;
  device_buffer workspace;
  std::mutex mu;
  std::map<plan_key, plan> plans;

  ~impl() {
    for (auto& [k, p] : plans) p.destroy();
    if (handle) cublasLtDestroy(handle);
  }

  const plan& get(int64_t n_tokens, int64_t n_out, int64_t n_in, cudaDataType_t out_type, uint32_t align) {
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
      cublasLtMatmulPreference_t pref = nullptr;
      DSPARK_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
      const size_t ws = workspace.bytes();
      cublasLtMatmulHeuristicResult_t result{};
      int n_results = 0;
      cublasStatus_t st1 = cublasLtMatmulPreferenceSetAttribute(
          pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws);
      // The heuristic assumes 256-byte aligned operands unless told otherwise.
      for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
        if (st1 == CUBLAS_STATUS_SUCCESS) st1 = cublasLtMatmulPreferenceSetAttribute(pref, attr, &align, sizeof align);
      }
      const cublasStatus_t st2 = st1 == CUBLAS_STATUS_SUCCESS
                                     ? cublasLtMatmulAlgoGetHeuristic(handle, p.op, p.a, p.b, p.c, p.c, pref, 1,
                                                                      &result, &n_results)
                                     : st1;
      cublasLtMatmulPreferenceDestroy(pref);
      DSPARK_CUBLAS_CHECK(st2);
      if (n_results == 0) {
        throw cuda_error("cuBLASLt: no algorithm for bf16 GEMM n_tokens=" + std::to_string(n_tokens) +
                         " n_out=" + std::to_string(n_out) + " n_in=" + std::to_string(n_in));
      }
      p.algo = result.algo;
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
    const plan& p = get(n_tokens, n_out, n_in, out_type, align);
    const float alpha = 1.f;
    DSPARK_CUBLAS_CHECK(cublasLtMatmul(handle, p.op, &alpha, w, p.a, x, p.b, &beta, y, p.c, y, p.c, &p.algo,
                                       workspace.data(), workspace.bytes(), stream));
  }
};

gemm_context::gemm_context(size_t workspace_bytes) : impl_(std::make_unique<impl>()) {
  DSPARK_CUBLAS_CHECK(cublasLtCreate(&impl_->handle));
  impl_->workspace = device_buffer(workspace_bytes);
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

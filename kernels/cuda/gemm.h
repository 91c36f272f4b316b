// Linear layers through cuBLASLt: y = x W^T with bf16 operands and float32 accumulation.
//
// Row-major shapes as everywhere in this project (a weight is [n_out, n_in], token rows are
// contiguous). The context owns the cuBLASLt handle, a preallocated workspace (so no call
// allocates, and calls can be captured in a CUDA graph) and a cache of the chosen algorithm per
// shape, filled on the first call of each shape (warm up before capturing).
//
// Choosing the algorithm: cuBLASLt's heuristic ranks candidates by a model, and for the skinny
// steps a verifier runs (9-512 token rows against a 4096-wide weight) its first choice can read
// the weight twice: on the Qwen3-8B shape a 136-row step cost 13.0 ms against 10.0 for 128 rows
// (docs/results/load_qwen3_8b_graph_cache_h100.md). So on the first call of a shape with at most
// `max_tokens` rows, the context times the heuristic's first `candidates` algorithms on the
// call's own operands and keeps the fastest (a one-off host synchronisation, never in a graph
// capture, where the first candidate is kept). Token counts share the choice in buckets of 8
// (9-16, 17-24, ...) where cuBLASLt accepts it, so ragged verify steps pay one timing a bucket. The choice depends on timing, so bits of
// such steps may differ between processes (never within one); DSPARK_GEMM_TUNE=1 turns timing
// off.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>

namespace dspark::cuda {

// How a context picks an algorithm for a new shape (see above).
struct gemm_tuning {
  int candidates = 16;    // heuristic results timed; 1 takes the heuristic's first, untimed
  int64_t max_tokens = 512;  // larger steps are compute-bound, where the heuristic does well
  // Experimental, off by default: the first `variants` heuristic results are also timed with
  // each other tile their algorithm offers and split-K 1, 2, 4 (up to 64 candidates in all).
  // Written against the 72- and 136-row jumps of the 8B step (fourteenth session); on the H100
  // the step's GEMMs explain 0.26 ms of the 3.1-ms jump at 136 rows and no variant beats the
  // heuristic's best by over 5% (NOTES.md, round 13), so it stays off.
  int variants = 0;
  // DSPARK_GEMM_TUNE=N (candidates, 1..64), DSPARK_GEMM_TUNE_MAX_TOKENS=M and
  // DSPARK_GEMM_VARIANTS=V (0..16) over the defaults; invalid values throw
  // std::invalid_argument naming the variable. Read once per process.
  static gemm_tuning from_env();
  // The same from the variables' values (null or empty: the default).
  static gemm_tuning parse(const char* candidates, const char* max_tokens, const char* variants = nullptr);
};

struct gemm_tuning_stats {
  int64_t shapes_timed = 0;  // shapes whose algorithm was chosen by timing
  int64_t shapes_changed = 0;  // of those, shapes where the fastest was not the heuristic's first
  int64_t shapes_reused = 0;  // shapes that took the timed choice of their bucket of 8 token counts
  int64_t variants_timed = 0;  // tile / split-K variants among the timed candidates (gemm_tuning::variants)
  int64_t variants_chosen = 0;  // shapes whose fastest candidate was such a variant
  double ms_spent = 0;       // host time spent timing
};

class gemm_context {
 public:
  // Creates the handle and allocates `workspace_bytes` of device workspace (32 MiB is what
  // cuBLASLt's fastest Hopper kernels ask for at most).
  explicit gemm_context(size_t workspace_bytes = 32u << 20, gemm_tuning tuning = gemm_tuning::from_env());
  ~gemm_context();
  gemm_context(const gemm_context&) = delete;
  gemm_context& operator=(const gemm_context&) = delete;

  // y[t, o] = sum_i x[t, i] * w[o, i]  (+ beta * y[t, o] for the float32 form)
  //   w: device [n_out, n_in] bf16;  x: device [n_tokens, n_in] bf16 (row stride n_in)
  //   y: device [n_tokens, n_out] bf16 or f32 (row stride n_out)
  // A shape first seen with beta != 0 is not timed (timing writes y), nor one first seen while
  // `stream` is being captured.
  // n_in % 8 == 0; any pointer alignment (plans are cached per alignment, 256 is fastest). Throws cuda_error when cuBLASLt finds no algorithm
  // or fails. Asynchronous on `stream`.
  void gemm(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n_tokens, int64_t n_out,
            int64_t n_in, __nv_bfloat16* y, cudaStream_t stream);
  void gemm(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n_tokens, int64_t n_out,
            int64_t n_in, float* y, float beta, cudaStream_t stream);

  gemm_tuning_stats tuning_stats() const;

 private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace dspark::cuda

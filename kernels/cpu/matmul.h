// Matrix products against weight tensors in their stored type (f32, f16, bf16, q8_0, q4_0,
// q4_1, q4_k, q6_k): the CPU backend's hot path.
//
// Activations are float32. A kernel may quantize them internally (per the weight type) into
// `workspace`; the result is float32. Work is split across output rows on the pool.
//
// Two precision modes for quantized weights (f32/f16/bf16 weights always use float math):
//   q8_activations  (default, fast) activations are rounded to int8 blocks of 32 with a float
//                   scale, and weight x activation block products are integer dot products.
//                   Relative error vs exact float math is ~1e-3 (per output, on random data).
//   f32_activations weights are decoded to float and multiplied with float32 activations
//                   (float accumulation): use for tight comparisons with reference logits.
// The q8 error is inherent to rounding activations (checked: float math on fake-quantized
// activations gives the same logits), and on SmolLM2-135M it moves logits by ~0.25 rms and up
// to ~2.4 at a few positions vs f32 mode, since a block holding one outlier activation rounds
// its small neighbours coarsely.
//
// Measured (bench/bench_kernels.cpp, AMD EPYC VM, 2 cores shared with builds, so per-thread
// CPU time is quoted; SmolLM2 shapes, Q4_1 weights):
//   one token, weights in cache  q8: 19-21 GMAC/s per thread (12-13 GB/s of Q4_1)
//                                f32: 5-7 GMAC/s per thread
//   512 tokens (prefill)         q8: 28-32 GMAC/s per thread; f32: 23-27 GMAC/s per thread
//   full decode pass (96 MB of weights per token) is memory bound: ~12 ms CPU single-thread
//   in q8 mode (~7.5 GB/s), against a measured read floor of 3-10 GB/s on this VM.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/cpu/thread_pool.h"
#include "models/formats/tensor_view.h"

namespace dspark {

// Largest pool matmul accepts (the workspace holds one scratch slot per thread).
constexpr int kMatmulMaxThreads = 64;

// Bytes of scratch that matmul needs for `n_tokens` rows of activations against `w`, in either
// precision mode, for pools of up to kMatmulMaxThreads threads.
size_t matmul_workspace_size(const tensor_view& w, int64_t n_tokens);

// y[t, o] = sum_i x[t, i] * w[o, i]   for t < n_tokens, o < w.n_rows()
//   w: [n_out, n_in] weights in any supported dtype
//   x: [n_tokens, n_in] float32, row stride n_in
//   y: [n_tokens, n_out] float32, row stride n_out
//   workspace: at least matmul_workspace_size(w, n_tokens) bytes, 64-byte aligned
void matmul(const tensor_view& w, const float* x, int64_t n_tokens, float* y, void* workspace,
            thread_pool& pool);

enum class matmul_precision : int {
  q8_activations = 0,
  f32_activations = 1,
};

// Sets the mode used by matmul() calls that do not pass one (process-wide, thread-safe).
void set_matmul_precision(matmul_precision p);
matmul_precision get_matmul_precision();

// As matmul() above, with the precision mode given per call.
void matmul(const tensor_view& w, const float* x, int64_t n_tokens, float* y, void* workspace,
            thread_pool& pool, matmul_precision precision);

// One weight of a grouped product and where its result goes: y = [n_tokens, w->n_rows()].
struct matmul_output {
  const tensor_view* w;
  float* y;
};

// Most weights one matmul_group call takes (q, k, v is the largest group the backend forms).
constexpr int kMatmulGroupMax = 4;

// Several weights against the same activations (q/k/v, gate/up) in one pool dispatch: the
// activations are quantized once and the weights' rows share one parallel_for, so a decode
// step waits at one barrier instead of one per weight. Each y is bitwise what matmul() gives.
// The weights must share their row length; dtypes may differ (a group whose weights take
// different kernel paths runs as one matmul() per weight).
//   workspace: at least matmul_workspace_size(*outputs[0].w, n_tokens) bytes
void matmul_group(const matmul_output* outputs, int n_outputs, const float* x, int64_t n_tokens,
                  void* workspace, thread_pool& pool, matmul_precision precision);

// Reads row `row` of an embedding table of any supported dtype into dst[row_length].
void embedding_row(const tensor_view& table, int64_t row, float* dst);

}  // namespace dspark

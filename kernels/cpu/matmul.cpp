// matmul entry points: argument checks, workspace layout, precision mode, and the split of
// output rows across the pool. The arithmetic lives in matmul_float.cpp (float activations)
// and matmul_q8.cpp (int8 activations).
#include "kernels/cpu/matmul.h"

#include <atomic>
#include <string>

#include "common/error.h"
#include "kernels/cpu/matmul_internal.h"
#include "kernels/cpu/weight_decode.h"

namespace dspark {
namespace {

std::atomic<int> g_precision{static_cast<int>(matmul_precision::q8_activations)};

constexpr size_t align64(size_t n) { return (n + 63) & ~size_t{63}; }

void check_args(const tensor_view& w, int64_t n_tokens) {
  if (w.shape.size() != 2) {
    throw invalid_argument_error("matmul: weight '" + w.name + "' must be 2-D, has " +
                                 std::to_string(w.shape.size()) + " dims");
  }
  const int64_t block = traits(w.type).block_size;
  if (w.row_length() % block != 0) {
    throw invalid_argument_error("matmul: weight '" + w.name + "' row length " +
                                 std::to_string(w.row_length()) + " is not a multiple of " +
                                 std::to_string(block));
  }
  if (n_tokens < 0) throw invalid_argument_error("matmul: negative n_tokens");
}

}  // namespace

namespace cpu {

matmul_ws layout_workspace(void* base, int64_t n_in, int64_t n_tokens) {
  const size_t nt = static_cast<size_t>(n_tokens);
  const size_t nb = static_cast<size_t>((n_in + 31) / 32);
  const size_t q_bytes = align64(nt * nb * 32);
  const size_t f_bytes = align64(nt * nb * sizeof(float));
  matmul_ws ws;
  ws.scratch_stride = align64(kFloatTileRows * static_cast<size_t>(n_in) * sizeof(float)) /
                      sizeof(float);
  ws.total_bytes = q_bytes + 2 * f_bytes +
                   kMatmulMaxThreads * ws.scratch_stride * sizeof(float);
  if (base != nullptr) {
    auto* p = static_cast<uint8_t*>(base);
    ws.act_q = reinterpret_cast<int8_t*>(p);
    ws.act_d = reinterpret_cast<float*>(p + q_bytes);
    ws.act_s = reinterpret_cast<float*>(p + q_bytes + f_bytes);
    ws.scratch = reinterpret_cast<float*>(p + q_bytes + 2 * f_bytes);
  }
  return ws;
}

}  // namespace cpu

size_t matmul_workspace_size(const tensor_view& w, int64_t n_tokens) {
  return cpu::layout_workspace(nullptr, w.row_length(), n_tokens).total_bytes;
}

void set_matmul_precision(matmul_precision p) {
  g_precision.store(static_cast<int>(p), std::memory_order_relaxed);
}

matmul_precision get_matmul_precision() {
  return static_cast<matmul_precision>(g_precision.load(std::memory_order_relaxed));
}

void matmul(const tensor_view& w, const float* x, int64_t n_tokens, float* y, void* workspace,
            thread_pool& pool) {
  matmul(w, x, n_tokens, y, workspace, pool, get_matmul_precision());
}

void matmul(const tensor_view& w, const float* x, int64_t n_tokens, float* y, void* workspace,
            thread_pool& pool, matmul_precision precision) {
  check_args(w, n_tokens);
  if (pool.n_threads() > kMatmulMaxThreads) {
    throw invalid_argument_error("matmul: pool has " + std::to_string(pool.n_threads()) +
                                 " threads, at most " + std::to_string(kMatmulMaxThreads) +
                                 " supported");
  }
  const int64_t n_in = w.row_length();
  const int64_t n_out = w.n_rows();
  if (n_tokens == 0 || n_out == 0) return;
  const cpu::matmul_ws ws = cpu::layout_workspace(workspace, n_in, n_tokens);

  // Rows go to threads in chunks that are multiples of 16, so every chunk starts on a row
  // tile boundary of the kernels; small matrices get fewer chunks than threads.
  const int64_t grain = 16;

  if (precision == matmul_precision::q8_activations && cpu::has_q8_kernel(w.type)) {
    if (n_tokens >= 8) {
      pool.parallel_for(n_tokens, 4, [&](int64_t t0, int64_t t1, int) {
        cpu::quantize_activations(x, n_in, t0, t1, ws);
      });
    } else {
      cpu::quantize_activations(x, n_in, 0, n_tokens, ws);
    }
    pool.parallel_for(n_out, grain, [&](int64_t r0, int64_t r1, int thread_index) {
      cpu::matmul_q8_rows(w, ws, n_tokens, y, r0, r1,
                          ws.scratch + static_cast<size_t>(thread_index) * ws.scratch_stride);
    });
    return;
  }
  pool.parallel_for(n_out, grain, [&](int64_t r0, int64_t r1, int thread_index) {
    cpu::matmul_f32_rows(w, x, n_tokens, y, r0, r1,
                         ws.scratch + static_cast<size_t>(thread_index) * ws.scratch_stride);
  });
}

void embedding_row(const tensor_view& table, int64_t row, float* dst) {
  if (row < 0 || row >= table.n_rows()) {
    throw invalid_argument_error("embedding_row: row " + std::to_string(row) + " of '" +
                                 table.name + "' outside [0, " +
                                 std::to_string(table.n_rows()) + ")");
  }
  cpu::decode_row(table.type, table.row(row), dst, table.row_length());
}

}  // namespace dspark

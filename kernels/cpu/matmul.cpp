// matmul entry points: argument checks, workspace layout, precision mode, and the split of
// output rows across the pool. The arithmetic lives in matmul_float.cpp (float activations)
// and matmul_q8.cpp (int8 activations).
#include "kernels/cpu/matmul.h"

#include <algorithm>
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
  const matmul_output one{&w, y};
  matmul_group(&one, 1, x, n_tokens, workspace, pool, precision);
}

void matmul_group(const matmul_output* outputs, int n_outputs, const float* x, int64_t n_tokens,
                  void* workspace, thread_pool& pool, matmul_precision precision) {
  if (n_outputs < 1 || n_outputs > kMatmulGroupMax) {
    throw invalid_argument_error("matmul_group: " + std::to_string(n_outputs) +
                                 " weights, expected 1.." + std::to_string(kMatmulGroupMax));
  }
  const int64_t n_in = outputs[0].w->row_length();
  for (int i = 0; i < n_outputs; ++i) {
    check_args(*outputs[i].w, n_tokens);
    if (outputs[i].w->row_length() != n_in) {
      throw invalid_argument_error("matmul_group: weight '" + outputs[i].w->name + "' has rows of " +
                                   std::to_string(outputs[i].w->row_length()) + ", the group's are " +
                                   std::to_string(n_in));
    }
  }
  if (pool.n_threads() > kMatmulMaxThreads) {
    throw invalid_argument_error("matmul: pool has " + std::to_string(pool.n_threads()) +
                                 " threads, at most " + std::to_string(kMatmulMaxThreads) +
                                 " supported");
  }
  if (n_tokens == 0) return;
  auto takes_q8 = [precision](const tensor_view& w) {
    return precision == matmul_precision::q8_activations && cpu::has_q8_kernel(w.type);
  };
  const bool q8 = takes_q8(*outputs[0].w);
  for (int i = 1; i < n_outputs; ++i) {
    if (takes_q8(*outputs[i].w) != q8) {  // mixed kernel paths: one dispatch per weight
      for (int j = 0; j < n_outputs; ++j)
        matmul_group(&outputs[j], 1, x, n_tokens, workspace, pool, precision);
      return;
    }
  }
  const cpu::matmul_ws ws = cpu::layout_workspace(workspace, n_in, n_tokens);

  // Rows go to threads in chunks that are multiples of 16, so every chunk starts on a row
  // tile boundary of the kernels; small matrices get fewer chunks than threads. In a group,
  // weight i's rows start at offset[i], rounded up to the grain so that this holds for each.
  const int64_t grain = 16;
  int64_t offset[kMatmulGroupMax + 1] = {0};
  for (int i = 0; i < n_outputs; ++i)
    offset[i + 1] = offset[i] + (outputs[i].w->n_rows() + grain - 1) / grain * grain;
  if (offset[n_outputs] == 0) return;

  if (q8) {
    if (n_tokens >= 8) {
      pool.parallel_for(n_tokens, 4, [&](int64_t t0, int64_t t1, int) {
        cpu::quantize_activations(x, n_in, t0, t1, ws);
      });
    } else {
      cpu::quantize_activations(x, n_in, 0, n_tokens, ws);
    }
  }
  pool.parallel_for(offset[n_outputs], grain, [&](int64_t r0, int64_t r1, int thread_index) {
    float* scratch = ws.scratch + static_cast<size_t>(thread_index) * ws.scratch_stride;
    for (int i = 0; i < n_outputs; ++i) {
      const tensor_view& w = *outputs[i].w;
      const int64_t lo = std::max(r0, offset[i]) - offset[i];
      const int64_t hi = std::min(std::min(r1, offset[i + 1]) - offset[i], w.n_rows());
      if (lo >= hi) continue;
      if (q8) {
        cpu::matmul_q8_rows(w, ws, n_tokens, outputs[i].y, lo, hi, scratch);
      } else {
        cpu::matmul_f32_rows(w, x, n_tokens, outputs[i].y, lo, hi, scratch);
      }
    }
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

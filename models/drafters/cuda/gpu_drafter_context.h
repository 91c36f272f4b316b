// What the GPU drafters share: their own CUDA stream, the drafter's weights uploaded as bf16
// (the target's embedding and LM head included: a private copy, so the drafter does not depend
// on where the target runs), skinny linear layers (the streaming GEMV up to 8 rows, cuBLASLt
// above), and CUDA graphs of fixed-shape rounds captured on their second occurrence.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <list>
#include <utility>
#include <vector>

#include "engine/cuda/graph_cache.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/paged_attention.h"
#include "models/drafters/drafter_config.h"
#include "models/drafters/drafter_weights.h"
#include "models/formats/tensor_view.h"

namespace dspark {

class gpu_drafter_context {
 public:
  gpu_drafter_context();
  ~gpu_drafter_context();
  gpu_drafter_context(const gpu_drafter_context&) = delete;
  gpu_drafter_context& operator=(const gpu_drafter_context&) = delete;

  cudaStream_t stream() const { return stream_; }
  cuda::gemm_context& gemm() { return gemm_; }

  // Device memory owned by the context (freed with it), `bytes` rounded up to 256.
  void* alloc(size_t bytes);
  // A [rows, cols] host tensor (any dtype the dequantizer reads) as bf16 on the device.
  __nv_bfloat16* upload(const tensor_view& t, int64_t rows, int64_t cols);
  // Several [rows_i, cols] drafter tensors stacked by rows into one matrix (fused projections).
  __nv_bfloat16* upload_stacked(std::initializer_list<const host_tensor*> parts);
  // f32 values on the device; nullptr for an empty vector.
  float* upload_floats(const std::vector<float>& v);
  // Waits for the uploads and drops the staging buffer.
  void finish_uploads();
  size_t device_bytes() const { return bytes_; }

  // y[n, n_out] = x[n, n_in] . w^T on the stream.
  void linear(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n, int64_t n_out, int64_t n_in,
              __nv_bfloat16* y);
  void linear(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n, int64_t n_out, int64_t n_in, float* y);

  // Runs enqueue() on the stream for a round of shape `key` (requests, drafts): eagerly the
  // first time (which also warms cuBLASLt's plans), captured as a graph the second time and
  // replayed from then on (engine/cuda/graph_cache.h). enqueue() must not synchronise.
  template <typename Enqueue>
  void run_graph(std::pair<int32_t, int32_t> key, Enqueue&& enqueue) {
    graphs_.run(key, stream_, enqueue);
  }

 private:
  cudaStream_t stream_ = nullptr;
  cuda::gemm_context gemm_;
  std::list<cuda::device_buffer> owned_;
  cuda::device_buffer staging_;
  size_t bytes_ = 0;
  cuda::graph_cache<std::pair<int32_t, int32_t>> graphs_{{.max_graphs = 64}};
};

// A drafter layer's K/V cache: one block of `cap` rows per slot in the paged layout of
// kernels/cuda/rope.h (row p of slot s is cache slot s * cap + p; block table entry = s).
struct slot_kv_cache {
  __nv_bfloat16* k = nullptr;
  __nv_bfloat16* v = nullptr;
  int32_t cap = 0;
  int32_t max_slots = 0;
};

// A layer's projection and cache write for n rows: qkv = x . wqkv^T (x: [n, n_in]), then q/k
// RMSNorm (when the config has it), NeoX RoPE at `positions` and the K/V write at cache
// `slots`; rotated Q into q. On the context's stream.
void drafter_qkv_rope_write(gpu_drafter_context& ctx, const drafter_config& c, const __nv_bfloat16* wqkv,
                            const __nv_bfloat16* x, int64_t n_in, int32_t n, const int32_t* positions,
                            const int32_t* slots, const float* inv_freq, const float* q_norm, const float* k_norm,
                            __nv_bfloat16* qkv, __nv_bfloat16* q, const slot_kv_cache& kv);

// Causal attention of n one-token pseudo-sequences over their slots' caches (cu_q_lens 0..n,
// kv_lens, block tables = slot ids, items {i, 0, 1}), decode variant, `split_len` keys per split.
void drafter_slot_attention(gpu_drafter_context& ctx, const drafter_config& c, const __nv_bfloat16* q,
                            const slot_kv_cache& kv, const int32_t* cu_q_lens, const int32_t* kv_lens,
                            const int32_t* block_tables, const cuda::attention_work_item* items, int32_t n,
                            int32_t split_len, int32_t n_splits, void* workspace, __nv_bfloat16* out);

}  // namespace dspark

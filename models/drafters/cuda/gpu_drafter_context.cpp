// gpu_drafter_context (see the header).
#include "models/drafters/cuda/gpu_drafter_context.h"

#include <cmath>

#include "engine/cuda/gpu_weights.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/rope.h"

namespace dspark {

gpu_drafter_context::gpu_drafter_context() {
  DSPARK_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

gpu_drafter_context::~gpu_drafter_context() {
  if (stream_ != nullptr) (void)cudaStreamSynchronize(stream_);
  if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
}

void* gpu_drafter_context::alloc(size_t bytes) {
  bytes = (bytes + 255) / 256 * 256;
  owned_.emplace_back(bytes);
  bytes_ += bytes;
  return owned_.back().data();
}

__nv_bfloat16* gpu_drafter_context::upload(const tensor_view& t, int64_t rows, int64_t cols) {
  auto* p = static_cast<__nv_bfloat16*>(alloc(static_cast<size_t>(rows * cols) * sizeof(__nv_bfloat16)));
  cuda::upload_matrix_bf16(t, rows, cols, p, staging_, stream_);
  return p;
}

__nv_bfloat16* gpu_drafter_context::upload_stacked(std::initializer_list<const host_tensor*> parts) {
  int64_t rows = 0;
  const int64_t cols = (*parts.begin())->shape.at(1);
  for (const host_tensor* t : parts) rows += t->shape.at(0);
  auto* p = static_cast<__nv_bfloat16*>(alloc(static_cast<size_t>(rows * cols) * sizeof(__nv_bfloat16)));
  int64_t row = 0;
  for (const host_tensor* t : parts) {
    cuda::upload_matrix_bf16(t->view(), t->shape[0], cols, p + row * cols, staging_, stream_);
    row += t->shape[0];
  }
  return p;
}

float* gpu_drafter_context::upload_floats(const std::vector<float>& v) {
  if (v.empty()) return nullptr;
  auto* p = static_cast<float*>(alloc(v.size() * sizeof(float)));
  DSPARK_CUDA_CHECK(cudaMemcpyAsync(p, v.data(), v.size() * sizeof(float), cudaMemcpyHostToDevice, stream_));
  return p;
}

void gpu_drafter_context::finish_uploads() {
  DSPARK_CUDA_CHECK(cudaStreamSynchronize(stream_));
  staging_.reset();
}

// Up to 8 rows (a batch-1 block, a few requests' chain rows) go through the weight-streaming
// GEMV, which reads each weight once at full bandwidth; cuBLASLt's kernels for such skinny
// products cost several microseconds of fixed time each.
void gpu_drafter_context::linear(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n, int64_t n_out,
                                 int64_t n_in, __nv_bfloat16* y) {
  if (n <= cuda::k_gemv_max_tokens) cuda::gemv_bf16(w, x, n, n_out, n_in, y, stream_);
  else gemm_.gemm(w, x, n, n_out, n_in, y, stream_);
}

void gpu_drafter_context::linear(const __nv_bfloat16* w, const __nv_bfloat16* x, int64_t n, int64_t n_out,
                                 int64_t n_in, float* y) {
  if (n <= cuda::k_gemv_max_tokens) cuda::gemv_bf16(w, x, n, n_out, n_in, y, stream_);
  else gemm_.gemm(w, x, n, n_out, n_in, y, 0.f, stream_);
}

void drafter_qkv_rope_write(gpu_drafter_context& ctx, const drafter_config& c, const __nv_bfloat16* wqkv,
                            const __nv_bfloat16* x, int64_t n_in, int32_t n, const int32_t* positions,
                            const int32_t* slots, const float* inv_freq, const float* q_norm, const float* k_norm,
                            __nv_bfloat16* qkv, __nv_bfloat16* q, const slot_kv_cache& kv) {
  const int64_t width = c.q_dim() + 2 * c.kv_dim();
  ctx.linear(wqkv, x, n, width, n_in, qkv);
  cuda::rope_kv_params rp;
  rp.qkv = qkv;
  rp.qkv_stride = width;
  rp.n_tokens = n;
  rp.n_head = static_cast<int32_t>(c.n_head);
  rp.n_kv_head = static_cast<int32_t>(c.n_head_kv);
  rp.head_dim = static_cast<int32_t>(c.head_dim);
  rp.n_rot = static_cast<int32_t>(c.head_dim);
  rp.positions = positions;
  rp.inv_freq = inv_freq;
  rp.pairing = cuda::rope_pairing::neox;
  rp.q_norm = c.qk_norm ? q_norm : nullptr;
  rp.k_norm = c.qk_norm ? k_norm : nullptr;
  rp.norm_eps = static_cast<float>(c.rms_eps);
  rp.q_out = q;
  rp.k_cache = kv.k;
  rp.v_cache = kv.v;
  rp.block_size = kv.cap;
  rp.n_cache_slots = static_cast<int64_t>(kv.max_slots) * kv.cap;
  rp.slots = slots;
  cuda::rope_qk_norm_kv_write(rp, ctx.stream());
}

void drafter_slot_attention(gpu_drafter_context& ctx, const drafter_config& c, const __nv_bfloat16* q,
                            const slot_kv_cache& kv, const int32_t* cu_q_lens, const int32_t* kv_lens,
                            const int32_t* block_tables, const cuda::attention_work_item* items, int32_t n,
                            int32_t split_len, int32_t n_splits, void* workspace, __nv_bfloat16* out) {
  cuda::paged_attention_params ap;
  ap.q = q;
  ap.k_cache = kv.k;
  ap.v_cache = kv.v;
  ap.out = out;
  ap.cu_q_lens = cu_q_lens;
  ap.kv_lens = kv_lens;
  ap.block_tables = block_tables;
  ap.max_blocks_per_seq = 1;
  ap.items = items;
  ap.n_items = n;
  ap.n_tokens = n;
  ap.n_seqs = n;
  ap.n_head = static_cast<int32_t>(c.n_head);
  ap.n_kv_head = static_cast<int32_t>(c.n_head_kv);
  ap.head_dim = static_cast<int32_t>(c.head_dim);
  ap.block_size = kv.cap;
  ap.scale = 1.f / std::sqrt(static_cast<float>(c.head_dim));
  ap.variant = cuda::attention_variant::decode;
  ap.split_len = split_len;
  ap.n_splits = n_splits;
  ap.workspace = workspace;
  cuda::paged_attention(ap, ctx.stream());
}

}  // namespace dspark

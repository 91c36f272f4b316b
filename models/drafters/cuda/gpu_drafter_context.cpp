// gpu_drafter_context (see the header).
#include "models/drafters/cuda/gpu_drafter_context.h"

#include "engine/cuda/gpu_weights.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/gemv.h"

namespace dspark {

gpu_drafter_context::gpu_drafter_context() {
  DSPARK_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
}

gpu_drafter_context::~gpu_drafter_context() {
  if (stream_ != nullptr) (void)cudaStreamSynchronize(stream_);
  for (auto& [key, g] : graphs_)
    if (g.exec != nullptr) (void)cudaGraphExecDestroy(g.exec);
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

void gpu_drafter_context::run_graph(std::pair<int32_t, int32_t> key, const std::function<void()>& enqueue,
                                    size_t max_graphs) {
  auto it = graphs_.find(key);
  if (it == graphs_.end() && graphs_.size() < max_graphs) it = graphs_.emplace(key, graph_entry{}).first;
  if (it == graphs_.end()) {
    enqueue();
    return;
  }
  graph_entry& g = it->second;
  if (g.exec == nullptr && ++g.seen >= 2) {
    cudaGraph_t graph = nullptr;
    DSPARK_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      enqueue();
    } catch (...) {
      (void)cudaStreamEndCapture(stream_, &graph);
      if (graph != nullptr) (void)cudaGraphDestroy(graph);
      throw;
    }
    DSPARK_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    const cudaError_t e = cudaGraphInstantiate(&g.exec, graph, 0);
    (void)cudaGraphDestroy(graph);
    DSPARK_CUDA_CHECK(e);
  }
  if (g.exec != nullptr) DSPARK_CUDA_CHECK(cudaGraphLaunch(g.exec, stream_));
  else enqueue();
}

}  // namespace dspark

// The Llama-family forward pass on the GPU over a flattened ragged batch, with CUDA-graph
// replay of decode steps.
//
// The runner owns every activation buffer (sized at construction for the largest step), a
// pinned host "plan" the caller fills per step (tokens, positions, KV slots, block tables,
// ...), and its device twin. run() uploads the plan with ONE copy, enqueues the whole forward
// on the caller's stream and, optionally, copies logits / argmax back; it never allocates and
// never synchronises: the caller syncs once when it needs the results.
//
// Per step (n = new tokens, d = n_embd; x is the float32 residual stream):
//   x = embed(tokens)
//   per layer: h = rmsnorm(x += mlp_out_prev); qkv = h Wqkv^T; (bias, q/k norm, RoPE, K/V ->
//              cache); a = attention(q, cache); o = a Wo^T; h = rmsnorm(x += o);
//              gu = h Wgu^T; m = silu(g) * u; mlp_out = m Wdown^T
//   h = rmsnorm(x += mlp_out); logits = gather(h, logit_rows) Wout^T   (float32)
// A step of at most 128 new tokens (plain decoding, speculative verification, also with up to 8
// captured layers for a drafter) is captured as a CUDA graph on the second occurrence of its shape and replayed
// after that.
#pragma once

#include <cuda_runtime_api.h>

#include <array>
#include <cstdint>
#include <compare>
#include <memory>
#include <span>
#include <type_traits>
#include <vector>

#include "engine/cuda/gpu_weights.h"
#include "engine/cuda/graph_cache.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/paged_attention.h"

namespace dspark::cuda {

struct gpu_runner_options {
  int32_t max_tokens = 512;        // new tokens in one step
  int32_t max_seqs = 64;           // sequences in one step
  int32_t max_rows = 512;          // logit rows in one step
  int32_t max_blocks_per_seq = 0;  // block-table width = ceil(n_ctx / block_size)
  int32_t max_capture_layers = 0;  // residual-stream captures per step
  // Keys per attention split. Fixed for the runner's life: results of a token are then
  // bit-identical whatever batch it is in (see paged_attention.h).
  int32_t split_len = 512;
  // Steps of at most this many tokens use the hand GEMV (bit-identical per row for 1..8 tokens),
  // larger ones cuBLASLt. 0 = always cuBLASLt.
  int32_t gemv_max_tokens = 8;
  bool use_graphs = true;
  // Steps of up to this many new tokens are captured as graphs (decode batches and verify
  // steps); larger ones run eagerly. The cache's cap on graphs bounds memory for varied shapes.
  // 128 since the graphs came; on the 8B shape the step curve jumps by ~3 ms between 128 and
  // 136 tokens (H100 and H200), and the GEMMs account for 0.26 ms of it (docs/benchmarks.md,
  // sixteenth session): the rest is what ~400 eager launches cost. Raising it is measured with
  // DSPARK_GRAPH_MAX_TOKENS (cuda_backend) before it changes.
  int32_t graph_max_tokens = 128;
  // Programmatic dependent launch for the runner's own kernels (kernels/cuda/pdl.h): each may
  // start while its predecessor drains; the GEMV prefetches weights meanwhile. Used for steps
  // of at most pdl_max_tokens new tokens, the hand GEMV's range. H100, graphs, context 1024
  // (bench_cuda --pdl, docs/results/bench_cuda_pdl_by_step_h100.md): on the Qwen3-8B shape
  // decode and verify steps of 2-5 tokens are 0.43-0.53 ms faster with it (6-7%), 6-7 tokens
  // 0.08-0.28 ms, 8 tokens 0.13 (decode) and -0.01 (verify); on SmolLM2-135M's shape every
  // 2-8-token step is 0.19-0.23 ms faster (13-16%).
  // Until 2026-12-07 only 1-token steps used it (one 8-token step on the 8B shape had measured
  // 0.2 ms slower, which no longer reproduces).
  bool use_pdl = true;
  int32_t pdl_max_tokens = 8;
};

// Shape of one step; the per-token and per-sequence arrays are in gpu_runner::plan().
struct step_desc {
  int32_t n_tokens = 0;
  int32_t n_seqs = 0;
  int32_t n_rows = 0;       // logit rows (indices in plan().logit_rows)
  int32_t max_kv_len = 0;   // largest kv_lens[r] of the step
  int32_t n_capture_rows = 0;  // captured rows (indices in plan().capture_rows)
  std::span<const int32_t> capture_layers;  // residual after these layers, for the capture rows
  bool copy_logits = true;  // copy logits to host_logits()
  bool copy_hidden = true;  // copy the captured rows to host_hidden() (else device_hidden() only)
  bool argmax = false;      // compute per-row argmax and copy it to host_argmax()
  int32_t n_layers = 0;     // run layers [0, n_layers) only (layer-skip drafting); 0 = all
};

class gpu_runner {
 public:
  // The pinned arrays the caller fills before run(). Indices of tokens are batch rows.
  struct host_plan {
    int32_t* tokens = nullptr;        // [max_tokens] token ids (< n_vocab, checked by the caller)
    int32_t* positions = nullptr;     // [max_tokens] absolute position of each token
    int32_t* slots = nullptr;         // [max_tokens] KV slot = block * block_size + offset, -1 = none
    int32_t* logit_rows = nullptr;    // [max_rows] batch rows whose logits are wanted
    int32_t* capture_rows = nullptr;  // [max_tokens] batch rows whose residuals are captured
    int32_t* cu_q_lens = nullptr;     // [max_seqs + 1] prefix sums of new tokens per sequence
    int32_t* kv_lens = nullptr;       // [max_seqs] cached tokens after this step
    int32_t* block_tables = nullptr;  // [max_seqs, max_blocks_per_seq]
  };

  // `w` and `kv` must outlive the runner. Allocates all buffers; throws on bad options.
  gpu_runner(const gpu_model_config& c, const gpu_weights& w, const gpu_kv_pool& kv,
             const gpu_runner_options& opt);
  ~gpu_runner();
  gpu_runner(const gpu_runner&) = delete;
  gpu_runner& operator=(const gpu_runner&) = delete;

  const host_plan& plan() const { return plan_; }
  const gpu_runner_options& options() const { return opt_; }

  // Enqueues the step described by `s` and plan() on `stream`. Throws std::invalid_argument
  // when s exceeds the limits. Results are ready after the stream is synchronised.
  void run(const step_desc& s, cudaStream_t stream);

  const float* host_logits() const { return h_logits_.as<float>(); }   // [n_rows, n_vocab]
  const int32_t* host_argmax() const { return h_argmax_.as<int32_t>(); }  // [n_rows]
  const float* host_hidden() const { return h_hidden_.as<float>(); }   // [n_layers][n_capture_rows][d]
  const float* device_logits() const { return logits_.as<float>(); }
  // The captured rows on the device: row i of captured layer l at
  // device_hidden() + l * device_hidden_layer_stride() + i * n_embd; rewritten by the next run().
  const float* device_hidden() const { return hidden_.as<float>(); }
  int64_t device_hidden_layer_stride() const { return static_cast<int64_t>(opt_.max_tokens) * c_.n_embd; }

  // Bytes of device memory the runner holds (activations, workspaces, plan).
  size_t device_bytes() const;
  // Device bytes a runner with these options will allocate (cuBLASLt workspace included), so
  // a caller can size the KV pool before building the runner that references it.
  static size_t device_bytes_for(const gpu_model_config& c, const gpu_runner_options& opt, int32_t block_size);
  int32_t graphs_captured() const { return graphs_.size(); }
  // Replayed / captured / eager steps since construction (engine/cuda/graph_cache.h).
  graph_launch_stats graph_stats() const {
    graph_launch_stats s = graphs_.stats();
    const gemm_tuning_stats t = gemm_.tuning_stats();
    s.gemm_shapes_timed = t.shapes_timed;
    s.gemm_timing_ms = t.ms_spent;
    return s;
  }

 private:
  struct shape {
    int32_t n_tokens, n_seqs, n_items, n_rows, n_splits, n_capture_rows;
    attention_variant variant;
    std::span<const int32_t> capture_layers;
    bool argmax;
    int32_t n_layers;  // layers run, [1, n_layer]
  };
  void enqueue(const shape& sh, cudaStream_t stream);
  void linear(const bf16_t* w, const bf16_t* x, int32_t n, int32_t n_out, int32_t n_in, bf16_t* y,
              cudaStream_t stream);

  gpu_model_config c_;
  const gpu_weights& w_;
  const gpu_kv_pool& kv_;
  gpu_runner_options opt_;
  gemm_context gemm_;

  // Plan: identical byte layout on host (pinned) and device, block tables last.
  size_t off_items_ = 0, off_block_tables_ = 0, plan_bytes_ = 0;
  std::vector<int32_t> q_lens_;  // [max_seqs] per-step scratch, allocated once
  pinned_buffer h_plan_;
  device_buffer d_plan_;
  host_plan plan_;
  int32_t* d_tokens_ = nullptr;
  int32_t* d_positions_ = nullptr;
  int32_t* d_slots_ = nullptr;
  int32_t* d_logit_rows_ = nullptr;
  int32_t* d_capture_rows_ = nullptr;
  int32_t* d_cu_q_lens_ = nullptr;
  int32_t* d_kv_lens_ = nullptr;
  attention_work_item* d_items_ = nullptr;
  int32_t* d_block_tables_ = nullptr;

  device_buffer x_, h_, scratch_, q_, attn_, delta_, act_, hsel_, logits_, argmax_, hidden_, attn_ws_;
  pinned_buffer h_logits_, h_argmax_, h_hidden_;
  int32_t max_splits_ = 1;

  // Everything enqueue() depends on besides the device plan.
  // Captured layers (a drafter's feature layers, constant per drafter) are part of the shape: the
  // gather kernels take the layer order and the row count as arguments.
  static constexpr size_t k_graph_max_capture_layers = 8;
  struct graph_key {
    int32_t n_tokens, n_seqs, n_items, n_rows, variant;
    bool argmax;
    int32_t n_layers;
    int32_t n_capture_rows;
    std::array<int32_t, k_graph_max_capture_layers> capture_layers;  // -1 past the list
    auto operator<=>(const graph_key&) const = default;
    friend uint64_t shape_fingerprint(const graph_key& k) {
      const auto& c = k.capture_layers;
      static_assert(std::tuple_size_v<std::remove_cvref_t<decltype(c)>> == 8, "the fingerprint lists every capture layer");
      return dspark::shape_fingerprint({k.n_tokens, k.n_seqs, k.n_items, k.n_rows, k.variant, k.argmax, k.n_layers,
                                        k.n_capture_rows, c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]});
    }
  };
  // Sequences whose q_len x group size fits this many decode-variant items use that variant.
  static constexpr int32_t k_decode_variant_max_items = 4;
  graph_cache<graph_key> graphs_;
};

}  // namespace dspark::cuda

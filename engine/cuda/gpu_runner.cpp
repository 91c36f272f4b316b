// The GPU forward pass and decode-graph replay (see gpu_runner.h).
#include "engine/cuda/gpu_runner.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda/argmax.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/gather_rows.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/pdl.h"
#include "kernels/cuda/rms_norm.h"
#include "kernels/cuda/rope.h"
#include "kernels/cuda/silu_mul.h"

namespace dspark::cuda {

namespace {

void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument("gpu_runner: " + msg);
}

size_t align256(size_t n) { return (n + 255) / 256 * 256; }

}  // namespace

gpu_runner::gpu_runner(const gpu_model_config& c, const gpu_weights& w, const gpu_kv_pool& kv,
                       const gpu_runner_options& opt)
    : c_(c), w_(w), kv_(kv), opt_(opt) {
  validate_gpu_config(c_);
  require(opt_.max_tokens > 0 && opt_.max_seqs > 0 && opt_.max_rows > 0 && opt_.max_blocks_per_seq > 0,
          "limits must be positive");
  require(opt_.max_seqs <= opt_.max_tokens, "max_seqs must not exceed max_tokens");
  require(opt_.split_len > 0 && opt_.split_len % 32 == 0, "split_len must be a positive multiple of 32");
  require(opt_.gemv_max_tokens >= 0 && opt_.gemv_max_tokens <= k_gemv_max_tokens, "gemv_max_tokens must be 0..8");
  require(opt_.max_capture_layers >= 0, "max_capture_layers must be >= 0");

  // Plan layout (int32 units), block tables last so a step copies only the rows it uses.
  const size_t T = opt_.max_tokens, S = opt_.max_seqs, R = opt_.max_rows;
  const size_t max_items = T;  // every item holds >= 1 token
  q_lens_.resize(S);
  size_t off = 0;
  const size_t off_tokens = off; off += align256(T * 4);
  const size_t off_positions = off; off += align256(T * 4);
  const size_t off_slots = off; off += align256(T * 4);
  const size_t off_rows = off; off += align256(R * 4);
  const size_t off_capture = off; off += align256(T * 4);
  const size_t off_cu = off; off += align256((S + 1) * 4);
  const size_t off_kv = off; off += align256(S * 4);
  off_items_ = off; off += align256(max_items * sizeof(attention_work_item));
  off_block_tables_ = off; off += align256(S * opt_.max_blocks_per_seq * 4);
  plan_bytes_ = off;
  h_plan_ = pinned_buffer(plan_bytes_);
  d_plan_ = device_buffer(plan_bytes_);
  auto* hb = static_cast<unsigned char*>(h_plan_.data());
  auto* db = static_cast<unsigned char*>(d_plan_.data());
  plan_.tokens = reinterpret_cast<int32_t*>(hb + off_tokens);
  plan_.positions = reinterpret_cast<int32_t*>(hb + off_positions);
  plan_.slots = reinterpret_cast<int32_t*>(hb + off_slots);
  plan_.logit_rows = reinterpret_cast<int32_t*>(hb + off_rows);
  plan_.capture_rows = reinterpret_cast<int32_t*>(hb + off_capture);
  plan_.cu_q_lens = reinterpret_cast<int32_t*>(hb + off_cu);
  plan_.kv_lens = reinterpret_cast<int32_t*>(hb + off_kv);
  plan_.block_tables = reinterpret_cast<int32_t*>(hb + off_block_tables_);
  d_tokens_ = reinterpret_cast<int32_t*>(db + off_tokens);
  d_positions_ = reinterpret_cast<int32_t*>(db + off_positions);
  d_slots_ = reinterpret_cast<int32_t*>(db + off_slots);
  d_logit_rows_ = reinterpret_cast<int32_t*>(db + off_rows);
  d_capture_rows_ = reinterpret_cast<int32_t*>(db + off_capture);
  d_cu_q_lens_ = reinterpret_cast<int32_t*>(db + off_cu);
  d_kv_lens_ = reinterpret_cast<int32_t*>(db + off_kv);
  d_items_ = reinterpret_cast<attention_work_item*>(db + off_items_);
  d_block_tables_ = reinterpret_cast<int32_t*>(db + off_block_tables_);

  const size_t d = c_.n_embd, bf = sizeof(bf16_t);
  x_ = device_buffer(T * d * 4);
  h_ = device_buffer(T * d * bf);
  scratch_ = device_buffer(T * std::max<size_t>(c_.qkv_dim(), 2ull * c_.n_ff) * bf);  // qkv, then gate|up
  q_ = device_buffer(T * c_.q_dim() * bf);
  attn_ = device_buffer(T * c_.q_dim() * bf);
  delta_ = device_buffer(T * d * bf);
  act_ = device_buffer(T * c_.n_ff * bf);
  hsel_ = device_buffer(R * d * bf);
  logits_ = device_buffer(R * c_.n_vocab * 4);
  argmax_ = device_buffer(R * 4);
  max_splits_ = attention_n_splits(opt_.max_blocks_per_seq * kv_.block_size(), opt_.split_len);
  attn_ws_ = device_buffer(paged_attention_workspace_bytes(T, c_.n_head, c_.head_dim, max_splits_));
  h_logits_ = pinned_buffer(R * c_.n_vocab * 4);
  h_argmax_ = pinned_buffer(R * 4);
  if (opt_.max_capture_layers > 0) {
    hidden_ = device_buffer(static_cast<size_t>(opt_.max_capture_layers) * T * d * 4);
    h_hidden_ = pinned_buffer(hidden_.bytes());
  }
  // Zero the residual and delta buffers once: graph padding rows then stay finite. Waited for
  // (device_buffer.h): run() enqueues on the caller's stream, which need not wait for a plain
  // cudaMemset, so a late one could zero x or delta in the middle of the first step.
  memset_and_wait(x_.data(), 0, x_.bytes());
  memset_and_wait(delta_.data(), 0, delta_.bytes());
}

gpu_runner::~gpu_runner() = default;  // graphs_ destroys its graphs

size_t gpu_runner::device_bytes_for(const gpu_model_config& c, const gpu_runner_options& o, int32_t block_size) {
  const size_t T = o.max_tokens, S = o.max_seqs, R = o.max_rows, d = c.n_embd, bf = sizeof(bf16_t);
  const size_t plan = 9 * 256 + (5 * T + R + S + 1 + S) * 4 + T * sizeof(attention_work_item) +
                      S * static_cast<size_t>(o.max_blocks_per_seq) * 4;
  const size_t acts = T * d * 4 + T * d * bf + T * std::max<size_t>(c.qkv_dim(), 2ull * c.n_ff) * bf +
                      2 * T * c.q_dim() * bf + T * d * bf + T * c.n_ff * bf + R * d * bf + R * c.n_vocab * 4 + R * 4 +
                      static_cast<size_t>(o.max_capture_layers) * T * d * 4;
  const size_t ws = paged_attention_workspace_bytes(
      T, c.n_head, c.head_dim, attention_n_splits(o.max_blocks_per_seq * block_size, o.split_len));
  return plan + acts + ws + (32u << 20) /* cuBLASLt workspace */ + 16 * 256 /* alignment */;
}

size_t gpu_runner::device_bytes() const {
  return d_plan_.bytes() + x_.bytes() + h_.bytes() + scratch_.bytes() + q_.bytes() + attn_.bytes() +
         delta_.bytes() + act_.bytes() + hsel_.bytes() + logits_.bytes() + argmax_.bytes() + hidden_.bytes() +
         attn_ws_.bytes();
}

void gpu_runner::linear(const bf16_t* w, const bf16_t* x, int32_t n, int32_t n_out, int32_t n_in, bf16_t* y,
                        cudaStream_t stream) {
  if (n <= opt_.gemv_max_tokens) gemv_bf16(w, x, n, n_out, n_in, y, stream);
  else gemm_.gemm(w, x, n, n_out, n_in, y, stream);
}

void gpu_runner::enqueue(const shape& sh, cudaStream_t s) {
  const pdl_scope pdl(opt_.use_pdl && sh.n_tokens <= opt_.pdl_max_tokens);
  const int32_t n = sh.n_tokens, d = c_.n_embd, ff = c_.n_ff;
  float* x = x_.as<float>();
  bf16_t* h = h_.as<bf16_t>();
  bf16_t* scratch = scratch_.as<bf16_t>();
  bf16_t* delta = delta_.as<bf16_t>();
  const size_t row_stride_d = static_cast<size_t>(opt_.max_tokens) * d;
  auto capture_after = [&](int32_t layer) {
    for (size_t i = 0; i < sh.capture_layers.size(); ++i)
      if (sh.capture_layers[i] == layer)
        gather_rows(x, d, d_capture_rows_, sh.n_capture_rows, d, hidden_.as<float>() + i * row_stride_d, s);
  };

  embedding_gather(w_.tok_embd, c_.n_vocab, d, d_tokens_, n, x, s);
  for (int32_t l = 0; l < sh.n_layers; ++l) {
    const gpu_layer& L = w_.layers[l];
    rms_norm_residual(x, l == 0 ? nullptr : delta, L.attn_norm, c_.rms_eps, h, n, d, s);
    if (l > 0) capture_after(l - 1);
    linear(L.wqkv, h, n, c_.qkv_dim(), d, scratch, s);

    rope_kv_params rp;
    rp.qkv = scratch;
    rp.qkv_stride = c_.qkv_dim();
    rp.qkv_bias = L.qkv_bias;
    rp.n_tokens = n;
    rp.n_head = c_.n_head;
    rp.n_kv_head = c_.n_kv_head;
    rp.head_dim = c_.head_dim;
    rp.n_rot = c_.n_rot;
    rp.positions = d_positions_;
    rp.inv_freq = w_.inv_freq;
    rp.pairing = c_.pairing;
    rp.q_norm = L.q_norm;
    rp.k_norm = L.k_norm;
    rp.norm_eps = c_.rms_eps;
    rp.q_out = q_.as<bf16_t>();
    rp.k_cache = kv_.k(l);
    rp.v_cache = kv_.v(l);
    rp.block_size = kv_.block_size();
    rp.n_cache_slots = static_cast<int64_t>(kv_.n_blocks()) * kv_.block_size();
    rp.slots = d_slots_;
    rope_qk_norm_kv_write(rp, s);

    paged_attention_params ap;
    ap.q = q_.as<bf16_t>();
    ap.k_cache = kv_.k(l);
    ap.v_cache = kv_.v(l);
    ap.out = attn_.as<bf16_t>();
    ap.cu_q_lens = d_cu_q_lens_;
    ap.kv_lens = d_kv_lens_;
    ap.block_tables = d_block_tables_;
    ap.max_blocks_per_seq = opt_.max_blocks_per_seq;
    ap.items = d_items_;
    ap.n_items = sh.n_items;
    ap.n_tokens = n;
    ap.n_seqs = sh.n_seqs;
    ap.n_head = c_.n_head;
    ap.n_kv_head = c_.n_kv_head;
    ap.head_dim = c_.head_dim;
    ap.block_size = kv_.block_size();
    ap.scale = 1.f / std::sqrt(static_cast<float>(c_.head_dim));
    ap.variant = sh.variant;
    ap.split_len = opt_.split_len;
    ap.n_splits = sh.n_splits;
    ap.workspace = attn_ws_.data();
    paged_attention(ap, s);

    linear(L.wo, attn_.as<bf16_t>(), n, d, c_.q_dim(), delta, s);
    rms_norm_residual(x, delta, L.ffn_norm, c_.rms_eps, h, n, d, s);
    linear(L.w_gate_up, h, n, 2 * ff, d, scratch, s);
    silu_mul(scratch, scratch + ff, 2 * static_cast<int64_t>(ff), act_.as<bf16_t>(), n, ff, s);
    linear(L.w_down, act_.as<bf16_t>(), n, d, ff, delta, s);
  }
  rms_norm_residual(x, delta, w_.output_norm, c_.rms_eps, h, n, d, s);
  capture_after(sh.n_layers - 1);
  gather_rows(h, d, d_logit_rows_, sh.n_rows, d, hsel_.as<bf16_t>(), s);
  if (sh.n_rows <= opt_.gemv_max_tokens) gemv_bf16(w_.output, hsel_.as<bf16_t>(), sh.n_rows, c_.n_vocab, d, logits_.as<float>(), s);
  else gemm_.gemm(w_.output, hsel_.as<bf16_t>(), sh.n_rows, c_.n_vocab, d, logits_.as<float>(), 0.f, s);
  if (sh.argmax) argmax_rows(logits_.as<float>(), sh.n_rows, c_.n_vocab, c_.n_vocab, argmax_.as<int32_t>(), s);
}

void gpu_runner::run(const step_desc& s, cudaStream_t stream) {
  require(s.n_tokens > 0 && s.n_tokens <= opt_.max_tokens, "n_tokens " + std::to_string(s.n_tokens) + " out of 1.." +
                                                               std::to_string(opt_.max_tokens));
  require(s.n_seqs > 0 && s.n_seqs <= opt_.max_seqs, "n_seqs out of range");
  require(s.n_rows >= 0 && s.n_rows <= opt_.max_rows, "n_rows out of range");
  require(s.max_kv_len > 0 && s.max_kv_len <= opt_.max_blocks_per_seq * kv_.block_size(), "max_kv_len out of range");
  require(static_cast<int32_t>(s.capture_layers.size()) <= opt_.max_capture_layers, "too many capture layers");
  require(s.n_capture_rows >= 0 && s.n_capture_rows <= s.n_tokens, "n_capture_rows out of range");
  require(s.n_layers >= 0 && s.n_layers <= c_.n_layer, "n_layers out of range");
  const int32_t n_layers = s.n_layers == 0 ? c_.n_layer : s.n_layers;
  for (int32_t l : s.capture_layers) require(l >= 0 && l < n_layers, "capture layer out of range");
  require(plan_.cu_q_lens[0] == 0 && plan_.cu_q_lens[s.n_seqs] == s.n_tokens, "cu_q_lens inconsistent with n_tokens");

  // Attention work items, written straight into the pinned plan.
  int32_t* q_lens = q_lens_.data();  // [max_seqs], sized at construction: a step allocates nothing
  int32_t max_q = 0;
  for (int32_t r = 0; r < s.n_seqs; ++r) {
    q_lens[r] = plan_.cu_q_lens[r + 1] - plan_.cu_q_lens[r];
    require(q_lens[r] >= 1, "sequence with no new tokens");
    max_q = std::max(max_q, q_lens[r]);
  }
  const int32_t G = c_.n_head / c_.n_kv_head;
  // The decode variant (8 query rows per block) also for short verify steps, cut into several
  // items: its blocks are latency-bound chains of few rows, and 4 items of 2 tokens (G = 4) ran
  // ~3.5x faster than one 32-row general block per (kv head, split) on the H100 (ncu: 103 vs
  // ~27 us per layer at q_len 8, context 2048, split_len 128); the items re-read the same keys
  // concurrently, from L2. Results are bit-identical across variants (paged_attention.h).
  // Longer steps (prefill chunks) keep the general variant, which reads each key once per 32 rows.
  const int32_t dec_rows = attention_rows_per_item(attention_variant::decode);
  const attention_variant variant =
      G <= dec_rows && max_q * G <= k_decode_variant_max_items * dec_rows ? attention_variant::decode
                                                                         : attention_variant::general;
  const bool graphable = opt_.use_graphs && s.capture_layers.size() <= k_graph_max_capture_layers &&
                         s.n_tokens <= opt_.graph_max_tokens;
  // Written straight into the pinned plan, whose items region holds max_tokens items. A graphed
  // step pads them to one per token (an item holds at least one), so its grid, and with it its
  // graph, depends on the token count and not on the mix of q_lens: on the H200 a ragged verify
  // level on SmolLM2's shape ran 66 eager and 78 capturing steps of 1,171, each new mix a new
  // shape (docs/benchmarks.md, fourteenth session). Padding blocks return at once.
  const std::span<attention_work_item> items_out{
      reinterpret_cast<attention_work_item*>(static_cast<unsigned char*>(h_plan_.data()) + off_items_),
      static_cast<size_t>(opt_.max_tokens)};
  int32_t n_items = plan_attention_items(q_lens, s.n_seqs, G, variant, items_out);
  if (graphable) n_items = pad_attention_items(items_out, n_items, s.n_tokens);

  // Graphs: plain decode steps (every sequence adds one token), and small ragged steps such as
  // speculative verification (<= graph_max_tokens new tokens). Everything a step reads
  // besides its shape (tokens, positions, slots, q/kv lengths, block tables, attention items,
  // logit rows) lives in the device plan uploaded before the launch, so a graph is keyed by the
  // shape alone. Replaying avoids ~400 host launches per step (the eager verify path was
  // launch-bound: 10-18 ms for 2-8 tokens vs 8.6 ms for a replayed 1-token step). The attention
  // in a graph runs max_splits_ splits; splits past a sequence's keys are empty and the
  // fixed-boundary combine makes the result bit-identical to the exact split count.
  shape sh{s.n_tokens, s.n_seqs, n_items, s.n_rows,
           graphable ? max_splits_ : attention_n_splits(s.max_kv_len, opt_.split_len), s.n_capture_rows,
           variant, s.capture_layers, s.argmax, n_layers};

  const size_t copy_bytes = off_block_tables_ + static_cast<size_t>(s.n_seqs) * opt_.max_blocks_per_seq * 4;
  DSPARK_CUDA_CHECK(cudaMemcpyAsync(d_plan_.data(), h_plan_.data(), copy_bytes, cudaMemcpyHostToDevice, stream));

  if (graphable) {
    graph_key key{s.n_tokens, s.n_seqs, sh.n_items, s.n_rows, static_cast<int32_t>(variant), s.argmax, n_layers,
                  s.n_capture_rows, {}};
    key.capture_layers.fill(-1);
    std::copy(s.capture_layers.begin(), s.capture_layers.end(), key.capture_layers.begin());
    graphs_.run(key, stream, [&] { enqueue(sh, stream); });
  } else {
    graphs_.run_eagerly([&] { enqueue(sh, stream); });
  }

  if (s.copy_logits && s.n_rows > 0) {
    DSPARK_CUDA_CHECK(cudaMemcpyAsync(h_logits_.data(), logits_.data(), static_cast<size_t>(s.n_rows) * c_.n_vocab * 4,
                                      cudaMemcpyDeviceToHost, stream));
  }
  if (s.argmax && s.n_rows > 0) {
    DSPARK_CUDA_CHECK(cudaMemcpyAsync(h_argmax_.data(), argmax_.data(), static_cast<size_t>(s.n_rows) * 4,
                                      cudaMemcpyDeviceToHost, stream));
  }
  if (s.copy_hidden && !s.capture_layers.empty() && s.n_capture_rows > 0) {
    const size_t per = static_cast<size_t>(opt_.max_tokens) * c_.n_embd * 4;
    const size_t rows_bytes = static_cast<size_t>(s.n_capture_rows) * c_.n_embd * 4;
    for (size_t i = 0; i < s.capture_layers.size(); ++i) {
      DSPARK_CUDA_CHECK(cudaMemcpyAsync(h_hidden_.as<unsigned char>() + i * rows_bytes,
                                        hidden_.as<unsigned char>() + i * per, rows_bytes,
                                        cudaMemcpyDeviceToHost, stream));
    }
  }
}

}  // namespace dspark::cuda

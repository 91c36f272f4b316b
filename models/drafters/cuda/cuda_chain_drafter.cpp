// cuda_chain_drafter: eagle3 / mtp1 on the GPU (see the header).
//
// A round splits into rows that only need their K/V (context rows before x0's, built in chunks
// of any length, eagerly) and g steps of one row per request (the row pairing f_{s-1} with x0,
// then the chain rows), whose shape depends only on (requests, g): those run as one CUDA graph.
#include "models/drafters/cuda/cuda_chain_drafter.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "engine/cuda/gpu_weights.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/argmax.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/drafter_ops.h"
#include "kernels/cuda/gather_rows.h"
#include "kernels/cuda/rms_norm.h"
#include "kernels/cuda/silu_mul.h"
#include "models/drafters/cuda/feature_staging.h"
#include "models/drafters/cuda/gpu_drafter_context.h"

namespace dspark {

using cuda::bf16_t;
using cuda::pinned_buffer;

namespace {

constexpr int32_t k_max_group = 64;      // requests per round pass (bounds the logits buffer)
constexpr int32_t k_pending_rows = 256;  // feature rows queued before a forced flush
constexpr int32_t k_chunk_rows = 256;    // K/V-only rows per pass
constexpr int32_t k_split_len = 64;      // attention keys per split

struct layout {
  size_t size = 0;
  size_t take(size_t bytes) {
    const size_t off = size;
    size = (size + bytes + 255) / 256 * 256;
    return off;
  }
};

}  // namespace

bool cuda_chain_drafter_supports(const drafter_config& c, std::string* why) {
  auto no = [&](const std::string& s) {
    if (why) *why = s;
    return false;
  };
  if (c.block_drafter()) return no(std::string("kind ") + drafter_kind_name(c.kind) + " is not eagle3 or mtp1");
  if (c.head_dim != 64 && c.head_dim != 128) return no("head_dim must be 64 or 128 for the GPU attention kernel");
  if (c.n_head_kv <= 0 || c.n_head % c.n_head_kv != 0 ||
      c.n_head / c.n_head_kv > cuda::attention_rows_per_item(cuda::attention_variant::decode))
    return no("n_head / n_head_kv must be a whole number of at most " +
              std::to_string(cuda::attention_rows_per_item(cuda::attention_variant::decode)) +
              " query heads per KV head");
  if (c.n_embd % 8 != 0 || c.n_ff % 8 != 0 || c.feature_width() % 8 != 0)
    return no("n_embd, n_ff and the feature width must be multiples of 8");
  return true;
}

struct cuda_chain_drafter::device_state {
  gpu_drafter_context ctx;
  cudaStream_t stream = ctx.stream();
  cudaEvent_t staged = nullptr;
  bool staged_pending = false;

  bf16_t *embed = nullptr, *head = nullptr, *fc = nullptr, *wqkv = nullptr, *wo = nullptr, *wgu = nullptr,
         *wdown = nullptr, *k_cache = nullptr, *v_cache = nullptr;
  float *input_norm = nullptr, *hidden_norm = nullptr, *ffn_norm = nullptr, *norm = nullptr, *q_norm = nullptr,
        *k_norm = nullptr, *inv_freq = nullptr;
  float* fused = nullptr;  // [max_slots * max_ctx, d] f_t

  // Activations.
  float* x = nullptr;       // [group, d] residual
  bf16_t* u = nullptr;      // [rows, 2d]
  bf16_t* qkv = nullptr;    // [rows, qkv]
  bf16_t* q = nullptr;      // [rows, q_dim]
  bf16_t* attn = nullptr;   // [group, q_dim]
  bf16_t* delta = nullptr;  // [group, d]
  bf16_t* hn = nullptr;     // [group, d]
  bf16_t* gu = nullptr;     // [group, 2F]
  bf16_t* mlp = nullptr;    // [group, F]
  float* logits = nullptr;  // [G, group, V]
  int32_t* tokens = nullptr;  // [G, group]
  float* feat = nullptr;      // [pending, fw]
  bf16_t* feat_bf = nullptr;
  float* fused_new = nullptr;  // [pending, d]
  void* attn_ws = nullptr;

  // Round metadata (pinned + device mirror, one copy per round): the step rows.
  pinned_buffer meta_host;
  void* meta_dev = nullptr;
  size_t meta_bytes = 0;
  size_t o_x0 = 0, o_frow0 = 0, o_ident = 0, o_cu = 0, o_bt = 0, o_items = 0, o_pos = 0, o_slot = 0, o_kv = 0;
  // K/V-only chunk metadata: y, f rows, positions, slots.
  pinned_buffer chunk_host;
  void* chunk_dev = nullptr;
  // Feature staging: rows (into feat), then fused row index per row.
  std::unique_ptr<feature_staging> stage;
  pinned_buffer feat_rows_host;
  int32_t* feat_rows_dev = nullptr;
  pinned_buffer out_host;     // tokens [G * group]
  pinned_buffer logits_host;  // [group, V] (sampled rounds)
  std::vector<float> rec_logits;

  template <typename T>
  T* at(void* b, size_t off) const {
    return reinterpret_cast<T*>(static_cast<char*>(b) + off);
  }
  template <typename T>
  T* at(const pinned_buffer& b, size_t off) const {
    return reinterpret_cast<T*>(static_cast<char*>(b.data()) + off);
  }
  ~device_state() {
    if (staged) (void)cudaEventDestroy(staged);
  }
};

cuda_chain_drafter::cuda_chain_drafter(drafter_config c, drafter_weights w, const drafter_target_head& target,
                                       const drafter_runtime_params& p)
    : c_(std::move(c)), p_(p) {
  std::string why;
  if (!cuda_chain_drafter_supports(c_, &why)) throw invalid_argument_error("cuda_chain_drafter: " + why);
  check_drafter_setup(c_, target, p, "cuda_chain_drafter");
  caps_.name = drafter_kind_name(c_.kind);
  caps_.dist_kind = p.sampled ? draft_dist_kind::dense : draft_dist_kind::one_hot;
  caps_.has_confidence = false;
  caps_.capture_layers = c_.target_layers;
  caps_.reads_device_features = device_features_enabled();
  group_size_ = std::min(p.max_slots, k_max_group);
  cap_ = (p.max_ctx + c_.block_size + 31) / 32 * 32;
  max_rows_ = std::max(k_chunk_rows, group_size_);
  pending_max_ = k_pending_rows;
  slots_.resize(static_cast<size_t>(p.max_slots));

  d_ = std::make_unique<device_state>();
  device_state& s = *d_;
  gpu_drafter_context& x = s.ctx;
  DSPARK_CUDA_CHECK(cudaEventCreateWithFlags(&s.staged, cudaEventDisableTiming));
  const int64_t d = c_.n_embd, G = c_.block_size, F = c_.n_ff, V = c_.target_n_vocab, fw = c_.feature_width();
  const int64_t qd = c_.q_dim(), kvd = c_.kv_dim(), qkv = qd + 2 * kvd, R = group_size_, M = max_rows_;
  const drafter_layer_weights& L = w.layers.at(0);
  s.embed = x.upload(target.embed, V, d);
  s.head = target.lm_head.data == target.embed.data ? s.embed : x.upload(target.lm_head, V, d);
  s.fc = x.upload(w.fc.view(), d, fw);
  s.wqkv = x.upload_stacked({&L.wq, &L.wk, &L.wv});
  s.wo = x.upload(L.wo.view(), d, qd);
  s.wgu = x.upload_stacked({&L.w_gate, &L.w_up});
  s.wdown = x.upload(L.w_down.view(), d, F);
  s.input_norm = x.upload_floats(w.input_norm.data);
  s.hidden_norm = x.upload_floats(w.hidden_norm.data);
  s.ffn_norm = x.upload_floats(L.ffn_norm.data);
  s.norm = x.upload_floats(w.norm.data);
  s.q_norm = x.upload_floats(L.q_norm.data);
  s.k_norm = x.upload_floats(L.k_norm.data);
  s.inv_freq = x.upload_floats(rope_inv_freqs(c_.head_dim, static_cast<float>(c_.rope_theta), c_.rope_scaling));
  const size_t cache_bytes = static_cast<size_t>(p.max_slots) * c_.n_head_kv * cap_ * c_.head_dim * sizeof(bf16_t);
  s.k_cache = static_cast<bf16_t*>(x.alloc(cache_bytes));
  s.v_cache = static_cast<bf16_t*>(x.alloc(cache_bytes));
  s.fused = static_cast<float*>(x.alloc(static_cast<size_t>(p.max_slots) * p.max_ctx * d * 4));

  s.x = static_cast<float*>(x.alloc(R * d * 4));
  s.u = static_cast<bf16_t*>(x.alloc(M * 2 * d * 2));
  s.qkv = static_cast<bf16_t*>(x.alloc(M * qkv * 2));
  s.q = static_cast<bf16_t*>(x.alloc(M * qd * 2));
  s.attn = static_cast<bf16_t*>(x.alloc(R * qd * 2));
  s.delta = static_cast<bf16_t*>(x.alloc(R * d * 2));
  s.hn = static_cast<bf16_t*>(x.alloc(R * d * 2));
  s.gu = static_cast<bf16_t*>(x.alloc(R * 2 * F * 2));
  s.mlp = static_cast<bf16_t*>(x.alloc(R * F * 2));
  s.logits = static_cast<float*>(x.alloc(G * R * V * 4));
  s.tokens = static_cast<int32_t*>(x.alloc(G * R * 4));
  s.feat = static_cast<float*>(x.alloc(pending_max_ * fw * 4));
  s.feat_bf = static_cast<bf16_t*>(x.alloc(pending_max_ * fw * 2));
  s.fused_new = static_cast<float*>(x.alloc(pending_max_ * d * 4));
  s.feat_rows_dev = static_cast<int32_t*>(x.alloc(pending_max_ * 4));
  const size_t ws = cuda::paged_attention_workspace_bytes(R, static_cast<int32_t>(c_.n_head),
                                                          static_cast<int32_t>(c_.head_dim),
                                                          cuda::attention_n_splits(cap_, k_split_len));
  if (ws > 0) s.attn_ws = x.alloc(ws);

  layout m;
  s.o_x0 = m.take(R * 4);
  s.o_frow0 = m.take(R * 4);
  s.o_ident = m.take(R * 4);
  s.o_cu = m.take((R + 1) * 4);
  s.o_bt = m.take(R * 4);
  s.o_items = m.take(R * sizeof(cuda::attention_work_item));
  s.o_pos = m.take(G * R * 4);
  s.o_slot = m.take(G * R * 4);
  s.o_kv = m.take(G * R * 4);
  s.meta_bytes = m.size;
  s.meta_host = pinned_buffer(m.size);
  s.meta_dev = x.alloc(m.size);
  s.chunk_host = pinned_buffer(static_cast<size_t>(4 * M) * 4);
  s.chunk_dev = x.alloc(static_cast<size_t>(4 * M) * 4);
  s.stage = std::make_unique<feature_staging>(x, s.feat, pending_max_, static_cast<int32_t>(c_.target_layers.size()),
                                              c_.target_n_embd);
  s.feat_rows_host = pinned_buffer(static_cast<size_t>(pending_max_) * 4);
  s.out_host = pinned_buffer(static_cast<size_t>(G * R) * 4);
  s.logits_host = pinned_buffer(static_cast<size_t>(R * V) * 4);
  x.finish_uploads();
}

cuda_chain_drafter::~cuda_chain_drafter() = default;

slot_kv_cache cuda_chain_drafter::kv_cache() const { return {d_->k_cache, d_->v_cache, cap_, p_.max_slots}; }

size_t cuda_chain_drafter::device_bytes() const { return d_->ctx.device_bytes(); }

cuda_chain_drafter::slot_info& cuda_chain_drafter::open_slot(int32_t slot) {
  if (slot < 0 || slot >= p_.max_slots || !slots_[static_cast<size_t>(slot)].open)
    throw invalid_argument_error("cuda_chain_drafter: slot " + std::to_string(slot) + " is not open");
  return slots_[static_cast<size_t>(slot)];
}

// Queued feature rows of `slot` at positions >= from are not written when flushed.
void cuda_chain_drafter::drop_pending(int32_t slot, int32_t from) {
  int32_t* rows = d_->at<int32_t>(d_->feat_rows_host, 0);
  const int32_t lo = slot * p_.max_ctx + from, hi = (slot + 1) * p_.max_ctx;
  for (int32_t i = 0; i < pending_rows_; ++i)
    if (rows[i] >= lo && rows[i] < hi) rows[i] = -1;
}

void cuda_chain_drafter::begin(int32_t slot, std::span<const int32_t>) {
  if (slot < 0 || slot >= p_.max_slots)
    throw invalid_argument_error("cuda_chain_drafter: slot " + std::to_string(slot) + " out of range [0, " +
                                 std::to_string(p_.max_slots) + ")");
  drop_pending(slot, 0);
  slot_info& s = slots_[static_cast<size_t>(slot)];
  s = {};
  s.open = true;
}

void cuda_chain_drafter::end(int32_t slot) {
  slot_info& s = open_slot(slot);
  drop_pending(slot, 0);
  s = {};
}

void cuda_chain_drafter::rollback(int32_t slot, int32_t n_context) {
  slot_info& s = open_slot(slot);
  s.n_feat = std::max(0, std::min(s.n_feat, n_context));
  s.built = std::max(0, std::min(s.built, n_context - 1));  // row t needs token t + 1
  drop_pending(slot, s.n_feat);
}

void cuda_chain_drafter::on_commit(int32_t slot, const commit_info& c) {
  slot_info& s = open_slot(slot);
  const target_features& f = c.features;
  const int32_t pos0 = c.features_pos0;
  if (!check_commit_features(f, pos0, s.n_feat, c_, p_.max_ctx, "cuda_chain_drafter", caps_.reads_device_features))
    return;
  device_state& d = *d_;
  drop_pending(slot, pos0);
  for (int32_t i = 0; i < f.n_rows; ++i) {
    if (!d.stage->fits(f)) flush_features();  // full, or the queued rows came the other way
    if (d.staged_pending) {  // the pinned row indices are still being read by the last upload
      DSPARK_CUDA_CHECK(cudaEventSynchronize(d.staged));
      d.staged_pending = false;
    }
    d.stage->add(f, i);
    d.at<int32_t>(d.feat_rows_host, 0)[pending_rows_] = slot * p_.max_ctx + pos0 + i;
    ++pending_rows_;
  }
  s.n_feat = pos0 + f.n_rows;
  s.built = std::min(s.built, pos0);  // rows at pos0.. are rebuilt from the new features
}

void cuda_chain_drafter::flush_features() {
  if (pending_rows_ == 0) return;
  device_state& s = *d_;
  const int32_t n = pending_rows_;
  const int64_t d = c_.n_embd, fw = c_.feature_width();
  cudaStream_t st = s.stream;
  s.stage->flush();  // rows [0, n) of s.feat
  DSPARK_CUDA_CHECK(cudaMemcpyAsync(s.feat_rows_dev, s.feat_rows_host.data(), static_cast<size_t>(n) * 4,
                                    cudaMemcpyHostToDevice, st));
  DSPARK_CUDA_CHECK(cudaEventRecord(s.staged, st));
  s.staged_pending = true;
  pending_rows_ = 0;
  cuda::convert_f32_to_bf16(s.feat, n * fw, s.feat_bf, st);
  s.ctx.linear(s.fc, s.feat_bf, n, d, fw, s.fused_new);  // f_t = fc . F_t
  cuda::scatter_rows_f32(s.fused_new, s.feat_rows_dev, n, d, s.fused, st);
}

void cuda_chain_drafter::before_target_forward() { d_->stage->launch(); }

void cuda_chain_drafter::propose(std::span<const propose_request> batch, draft_batch& out) {
  group_request grp[k_max_group];
  int32_t n = 0;
  for (const propose_request& r : batch) {
    slot_info& s = open_slot(r.slot);
    const int32_t pos = static_cast<int32_t>(r.context.size()) - 1;  // x0's position
    const int32_t g = std::min({r.max_drafts, c_.block_size, out.params().gamma_max - out.length(r.slot)});
    // Needs f_t for t < pos (the last pairs with x0); nothing to draft from otherwise.
    if (g <= 0 || pos < 1 || s.n_feat < pos || pos + g > p_.max_ctx + c_.block_size) continue;
    grp[n++] = {&r, g};
    if (n == group_size_) {
      run_group({grp, static_cast<size_t>(n)}, out);
      n = 0;
    }
  }
  if (n > 0) run_group({grp, static_cast<size_t>(n)}, out);
}

void cuda_chain_drafter::run_group(std::span<const group_request> grp, draft_batch& out) {
  flush_features();
  device_state& s = *d_;
  cudaStream_t st = s.stream;
  const int32_t R = static_cast<int32_t>(grp.size()), G = c_.block_size;
  const int64_t d = c_.n_embd, V = c_.target_n_vocab, F = c_.n_ff, qd = c_.q_dim();
  const float eps = static_cast<float>(c_.rms_eps);

  // 1. Rows that only need K/V: built .. s - 2 of every request (the row of s - 1 pairs with
  // x0 and is step 0 below), in chunks of max_rows_.
  int32_t* cy = s.at<int32_t>(s.chunk_host, 0);
  int32_t *cf = cy + max_rows_, *cp = cy + 2 * max_rows_, *cs = cy + 3 * max_rows_;
  int32_t n = 0;
  auto flush_chunk = [&] {
    if (n == 0) return;
    DSPARK_CUDA_CHECK(cudaMemcpyAsync(s.chunk_dev, s.chunk_host.data(), static_cast<size_t>(4 * max_rows_) * 4,
                                      cudaMemcpyHostToDevice, st));
    int32_t* dv = static_cast<int32_t*>(s.chunk_dev);
    cuda::chain_input_rows(s.embed, dv, s.fused, dv + max_rows_, s.input_norm, s.hidden_norm, eps, n, d, s.u, st);
    drafter_qkv_rope_write(s.ctx, c_, s.wqkv, s.u, 2 * d, n, dv + 2 * max_rows_, dv + 3 * max_rows_, s.inv_freq,
                           s.q_norm, s.k_norm, s.qkv, s.q, kv_cache());
    n = 0;
  };
  for (const group_request& q : grp) {
    slot_info& si = slots_[static_cast<size_t>(q.r->slot)];
    const int32_t pos = static_cast<int32_t>(q.r->context.size()) - 1;
    for (int32_t t = std::min(si.built, pos - 1); t < pos - 1; ++t) {
      if (n == max_rows_) {
        flush_chunk();
        DSPARK_CUDA_CHECK(cudaStreamSynchronize(st));  // the pinned chunk is rewritten next
      }
      cy[n] = q.r->context[static_cast<size_t>(t) + 1];
      cf[n] = q.r->slot * p_.max_ctx + t;
      cp[n] = t;
      cs[n] = q.r->slot * cap_ + t;
      ++n;
    }
    si.built = pos;  // rows 0..pos-1 hold target-feature K/V after this round; chain rows are scratch
  }
  flush_chunk();

  // 2. Steps j = 0..g_max-1, one row per request at s - 1 + j.
  int32_t g_max = 0;
  bool sampled = false;
  int32_t* x0 = s.at<int32_t>(s.meta_host, s.o_x0);
  int32_t* frow0 = s.at<int32_t>(s.meta_host, s.o_frow0);
  int32_t* ident = s.at<int32_t>(s.meta_host, s.o_ident);
  int32_t* cu = s.at<int32_t>(s.meta_host, s.o_cu);
  int32_t* bt = s.at<int32_t>(s.meta_host, s.o_bt);
  auto* items = s.at<cuda::attention_work_item>(s.meta_host, s.o_items);
  int32_t* pos = s.at<int32_t>(s.meta_host, s.o_pos);
  int32_t* slot = s.at<int32_t>(s.meta_host, s.o_slot);
  int32_t* kv = s.at<int32_t>(s.meta_host, s.o_kv);
  for (int32_t i = 0; i < R; ++i) {
    const group_request& q = grp[static_cast<size_t>(i)];
    const int32_t p0 = static_cast<int32_t>(q.r->context.size()) - 1;
    x0[i] = q.r->context.back();
    frow0[i] = q.r->slot * p_.max_ctx + p0 - 1;
    ident[i] = i;
    cu[i] = i;
    bt[i] = q.r->slot;
    items[i] = {i, 0, 1};
    for (int32_t j = 0; j < G; ++j) {
      pos[j * R + i] = p0 - 1 + j;
      slot[j * R + i] = q.r->slot * cap_ + p0 - 1 + j;
      kv[j * R + i] = p0 + j;
    }
    g_max = std::max(g_max, q.g);
    sampled |= p_.sampled && q.r->sampling != nullptr && q.r->sampling->temperature > 0.0f;
  }
  cu[R] = R;

  auto step = [&](int32_t j, int32_t n_splits) {
    const int32_t* y = j == 0 ? s.at<int32_t>(s.meta_dev, s.o_x0) : s.tokens + (j - 1) * R;
    const float* f_src = j == 0 ? s.fused : s.x;
    const int32_t* f_rows = j == 0 ? s.at<int32_t>(s.meta_dev, s.o_frow0) : s.at<int32_t>(s.meta_dev, s.o_ident);
    cuda::chain_input_rows(s.embed, y, f_src, f_rows, s.input_norm, s.hidden_norm, eps, R, d, s.u, st);
    drafter_qkv_rope_write(s.ctx, c_, s.wqkv, s.u, 2 * d, R, s.at<int32_t>(s.meta_dev, s.o_pos) + j * R,
                           s.at<int32_t>(s.meta_dev, s.o_slot) + j * R, s.inv_freq, s.q_norm, s.k_norm, s.qkv, s.q,
                           kv_cache());
    drafter_slot_attention(s.ctx, c_, s.q, kv_cache(), s.at<int32_t>(s.meta_dev, s.o_cu),
                           s.at<int32_t>(s.meta_dev, s.o_kv) + j * R, s.at<int32_t>(s.meta_dev, s.o_bt),
                           s.at<cuda::attention_work_item>(s.meta_dev, s.o_items), R, k_split_len, n_splits, s.attn_ws,
                           s.attn);
    // h = f + o-proj(attn); step 0's f is f_{s-1}, later steps continue from h of the last.
    if (j == 0) cuda::gather_rows(s.fused, d, f_rows, R, d, s.x, st);
    s.ctx.linear(s.wo, s.attn, R, d, qd, s.delta);
    cuda::rms_norm_residual(s.x, s.delta, s.ffn_norm, eps, s.hn, R, d, st);
    s.ctx.linear(s.wgu, s.hn, R, 2 * F, d, s.gu);
    cuda::silu_mul(s.gu, s.gu + F, 2 * F, s.mlp, R, F, st);
    s.ctx.linear(s.wdown, s.mlp, R, d, F, s.delta);
    cuda::rms_norm_residual(s.x, s.delta, s.norm, eps, s.hn, R, d, st);  // x = h (pre-norm) for the next step
    s.ctx.linear(s.head, s.hn, R, V, d, s.logits + static_cast<int64_t>(j) * R * V);
  };

  int32_t* tok_host = s.at<int32_t>(s.out_host, 0);
  if (!sampled) {
    const int32_t all_splits = cuda::attention_n_splits(cap_, k_split_len);
    s.ctx.run_graph({R, g_max}, [&] {
      DSPARK_CUDA_CHECK(cudaMemcpyAsync(s.meta_dev, s.meta_host.data(), s.meta_bytes, cudaMemcpyHostToDevice, st));
      for (int32_t j = 0; j < g_max; ++j) {
        step(j, all_splits);
        cuda::argmax_rows(s.logits + static_cast<int64_t>(j) * R * V, R, V, V, s.tokens + j * R, st);
      }
      DSPARK_CUDA_CHECK(cudaMemcpyAsync(tok_host, s.tokens, static_cast<size_t>(g_max) * R * 4, cudaMemcpyDeviceToHost,
                                        st));
    });
  } else {
    DSPARK_CUDA_CHECK(cudaMemcpyAsync(s.meta_dev, s.meta_host.data(), s.meta_bytes, cudaMemcpyHostToDevice, st));
    int32_t max_kv = 0;
    for (int32_t i = 0; i < R; ++i) max_kv = std::max(max_kv, kv[(g_max - 1) * R + i]);
    float* lh = s.at<float>(s.logits_host, 0);
    for (int32_t j = 0; j < g_max; ++j) {
      step(j, cuda::attention_n_splits(max_kv, k_split_len));
      DSPARK_CUDA_CHECK(cudaMemcpyAsync(lh, s.logits + static_cast<int64_t>(j) * R * V, static_cast<size_t>(R * V) * 4,
                                        cudaMemcpyDeviceToHost, st));
      DSPARK_CUDA_CHECK(cudaStreamSynchronize(st));
      for (int32_t i = 0; i < R; ++i) {
        const group_request& q = grp[static_cast<size_t>(i)];
        // Past its g a request repeats its last token (its later rows are never read).
        tok_host[j * R + i] = j < q.g ? push_draft(*q.r, lh + static_cast<int64_t>(i) * V, V, p_.sampled, 1.0f,
                                                   slots_[static_cast<size_t>(q.r->slot)].smp, out)
                                      : tok_host[(j - 1) * R + i];
      }
      DSPARK_CUDA_CHECK(cudaMemcpyAsync(s.tokens + j * R, tok_host + j * R, static_cast<size_t>(R) * 4,
                                        cudaMemcpyHostToDevice, st));
    }
  }
  if (record_) {
    s.rec_logits.resize(static_cast<size_t>(g_max) * R * V);
    DSPARK_CUDA_CHECK(cudaMemcpyAsync(s.rec_logits.data(), s.logits, s.rec_logits.size() * 4, cudaMemcpyDeviceToHost, st));
    rec_r_ = R;
  }
  DSPARK_CUDA_CHECK(cudaStreamSynchronize(st));
  if (sampled) return;
  for (int32_t i = 0; i < R; ++i) {
    const group_request& q = grp[static_cast<size_t>(i)];
    for (int32_t j = 0; j < q.g; ++j) out.push_one_hot(q.r->slot, tok_host[j * R + i], 1.0f);
  }
}

std::vector<float> cuda_chain_drafter::recorded_logits(int32_t i) const {
  std::vector<float> v;
  const int64_t V = c_.target_n_vocab;
  const size_t G = d_->rec_logits.size() / static_cast<size_t>(std::max(1, rec_r_) * V);
  for (size_t j = 0; j < G; ++j) {
    const float* row = d_->rec_logits.data() + (j * rec_r_ + i) * V;
    v.insert(v.end(), row, row + V);
  }
  return v;
}

}  // namespace dspark

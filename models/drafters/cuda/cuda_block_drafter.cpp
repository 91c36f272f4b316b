// cuda_block_drafter: the dspark/dflash forward on the GPU (see the header for the layout).
#include "models/drafters/cuda/cuda_block_drafter.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "common/error.h"
#include "engine/cuda/gpu_weights.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/argmax.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/drafter_ops.h"
#include "kernels/cuda/embedding.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemv.h"
#include "models/drafters/cuda/feature_staging.h"
#include "models/drafters/cuda/gpu_drafter_context.h"
#include "kernels/cuda/paged_attention.h"
#include "kernels/cuda/rms_norm.h"
#include "kernels/cuda/silu_mul.h"

namespace dspark {

using cuda::bf16_t;
using cuda::pinned_buffer;

namespace {

constexpr int32_t k_max_group = 64;       // requests per block forward (bounds the logits buffer)
constexpr int32_t k_pending_rows = 256;   // context rows queued before a forced flush
constexpr int32_t k_split_len = 64;       // attention keys per split

float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Bump layout over one allocation (device or pinned): 256-byte aligned offsets.
struct layout {
  size_t size = 0;
  size_t take(size_t bytes) {
    const size_t off = size;
    size = (size + bytes + 255) / 256 * 256;
    return off;
  }
};

}  // namespace

bool cuda_block_drafter_supports(const drafter_config& c, std::string* why) {
  auto no = [&](const std::string& s) {
    if (why) *why = s;
    return false;
  };
  if (!c.block_drafter()) return no(std::string("kind ") + drafter_kind_name(c.kind) + " is not a block drafter");
  if (c.markov == markov_kind::rnn) return no("the RNN Markov head runs on the CPU drafter only");
  if (c.head_dim != 64 && c.head_dim != 128) return no("head_dim must be 64 or 128 for the GPU attention kernel");
  if (c.n_head_kv <= 0 || c.n_head % c.n_head_kv != 0 ||
      c.n_head / c.n_head_kv > cuda::attention_rows_per_item(cuda::attention_variant::decode))
    return no("n_head / n_head_kv must be a whole number of at most " +
              std::to_string(cuda::attention_rows_per_item(cuda::attention_variant::decode)) +
              " query heads per KV head");
  if (c.n_embd % 8 != 0 || c.n_ff % 8 != 0 || c.feature_width() % 8 != 0 ||
      (c.markov != markov_kind::none && c.markov_rank % 8 != 0))
    return no("n_embd, n_ff, the feature width and the Markov rank must be multiples of 8");
  return true;
}

// One drafter layer's weights and its context cache on the device.
struct cuda_block_drafter::device_layer {
  __nv_bfloat16 *wqkv, *wo, *wgu, *wdown;  // fused [wq|wk|wv], wo, fused [gate|up], down
  float *attn_norm, *ffn_norm, *q_norm, *k_norm;
  __nv_bfloat16 *k_cache, *v_cache;  // [max_slots, n_kv_head, cap, head_dim]
};

struct cuda_block_drafter::device_state {
  gpu_drafter_context ctx;
  cudaStream_t stream = ctx.stream();
  cudaEvent_t staged = nullptr;  // the last context upload has left the pinned staging
  bool staged_pending = false;

  std::vector<device_layer> layers;
  bf16_t *fc = nullptr, *w1 = nullptr, *w2 = nullptr, *embed = nullptr, *head = nullptr;
  float *hidden_norm = nullptr, *norm = nullptr, *conf_w = nullptr, *inv_freq = nullptr;
  float conf_b = 0.f;

  // Activations: rows = max(block rows, pending context rows).
  float* x = nullptr;       // [rows, d] residual
  bf16_t* h = nullptr;      // [rows, d] normed
  bf16_t* qkv = nullptr;    // [rows, qkv]
  bf16_t* q = nullptr;      // [rows, q_dim]
  bf16_t* attn = nullptr;   // [rows, q_dim]
  bf16_t* delta = nullptr;  // [rows, d]
  bf16_t* gu = nullptr;     // [N, 2F]
  bf16_t* mlp = nullptr;    // [N, F]
  float* logits = nullptr;  // [N, V]
  float* bias = nullptr;    // [min(group, 8), V] Markov bias of one position (GEMV path)
  bf16_t* e = nullptr;      // [group, r]
  float* z = nullptr;       // [N]
  int32_t* tokens = nullptr;  // [N] drafted tokens, k-major
  float* feat = nullptr;    // [pending, fw] f32
  bf16_t* feat_bf = nullptr;
  void* attn_ws = nullptr;

  // Per-call metadata, pinned on the host and mirrored on the device (one copy per call).
  size_t meta_bytes = 0;
  pinned_buffer meta_host;
  void* meta_dev = nullptr;
  size_t o_ids = 0, o_pos = 0, o_slots = 0, o_cu = 0, o_kv = 0, o_bt = 0, o_items = 0;
  // Context staging: feature rows (into feat) and their slots and positions.
  std::unique_ptr<feature_staging> stage;
  pinned_buffer ctx_meta_host;  // slots [pending] then positions [pending]
  int32_t* ctx_meta_dev = nullptr;
  // Results.
  pinned_buffer out_host;    // tokens [N] then z [N]
  pinned_buffer logits_host; // [group, V] (sampled rounds), or [N, V] when recording
  std::vector<float> rec_logits, rec_conf;

  template <typename T>
  T* at(const pinned_buffer& b, size_t off) const {
    return reinterpret_cast<T*>(static_cast<char*>(b.data()) + off);
  }
  template <typename T>
  T* at(void* b, size_t off) const {
    return reinterpret_cast<T*>(static_cast<char*>(b) + off);
  }

  ~device_state() {
    if (staged) (void)cudaEventDestroy(staged);
  }
};

cuda_block_drafter::cuda_block_drafter(drafter_config c, drafter_weights w, const drafter_target_head& target,
                                       const drafter_runtime_params& p)
    : c_(std::move(c)), p_(p) {
  std::string why;
  if (!cuda_block_drafter_supports(c_, &why)) throw invalid_argument_error("cuda_block_drafter: " + why);
  check_drafter_setup(c_, target, p, "cuda_block_drafter");
  caps_.name = drafter_kind_name(c_.kind);
  caps_.dist_kind = p.sampled ? draft_dist_kind::dense : draft_dist_kind::one_hot;
  caps_.has_confidence = c_.confidence;
  caps_.capture_layers = c_.target_layers;
  caps_.reads_device_features = device_features_enabled();
  group_size_ = std::min(p.max_slots, k_max_group);
  cap_ = static_cast<int32_t>(round_up(p.max_ctx + c_.block_size, 32));
  pending_max_ = k_pending_rows;
  slots_.resize(static_cast<size_t>(p.max_slots));

  d_ = std::make_unique<device_state>();
  device_state& s = *d_;
  gpu_drafter_context& x = s.ctx;
  DSPARK_CUDA_CHECK(cudaEventCreateWithFlags(&s.staged, cudaEventDisableTiming));

  const int64_t d = c_.n_embd, G = c_.block_size, F = c_.n_ff, V = c_.target_n_vocab, r = c_.markov_rank;
  const int64_t qd = c_.q_dim(), kvd = c_.kv_dim(), qkv = qd + 2 * kvd, fw = c_.feature_width();
  s.embed = x.upload(target.embed, V, d);
  s.head = target.lm_head.data == target.embed.data ? s.embed : x.upload(target.lm_head, V, d);
  s.fc = x.upload(w.fc.view(), d, fw);
  s.hidden_norm = x.upload_floats(w.hidden_norm.data);
  s.norm = x.upload_floats(w.norm.data);
  if (c_.markov == markov_kind::vanilla) {
    s.w1 = x.upload(w.markov_w1.view(), V, r);
    s.w2 = x.upload(w.markov_w2.view(), V, r);
  }
  if (c_.confidence) {
    s.conf_w = x.upload_floats(w.conf_w.data);
    s.conf_b = w.conf_b.data.at(0);
  }
  s.inv_freq = x.upload_floats(rope_inv_freqs(c_.head_dim, static_cast<float>(c_.rope_theta), c_.rope_scaling));
  const size_t cache_bytes = static_cast<size_t>(p.max_slots) * c_.n_head_kv * cap_ * c_.head_dim * sizeof(bf16_t);
  for (const drafter_layer_weights& L : w.layers) {
    device_layer l{};
    l.wqkv = x.upload_stacked({&L.wq, &L.wk, &L.wv});
    l.wo = x.upload(L.wo.view(), d, qd);
    l.wgu = x.upload_stacked({&L.w_gate, &L.w_up});
    l.wdown = x.upload(L.w_down.view(), d, F);
    l.attn_norm = x.upload_floats(L.attn_norm.data);
    l.ffn_norm = x.upload_floats(L.ffn_norm.data);
    l.q_norm = x.upload_floats(L.q_norm.data);
    l.k_norm = x.upload_floats(L.k_norm.data);
    l.k_cache = static_cast<bf16_t*>(x.alloc(cache_bytes));
    l.v_cache = static_cast<bf16_t*>(x.alloc(cache_bytes));
    s.layers.push_back(l);
  }

  const int64_t N = G * group_size_, rows = std::max<int64_t>(N, pending_max_);
  layout a;
  const size_t o_x = a.take(rows * d * 4), o_h = a.take(rows * d * 2), o_qkv = a.take(rows * qkv * 2),
               o_q = a.take(rows * qd * 2), o_attn = a.take(rows * qd * 2), o_delta = a.take(rows * d * 2),
               o_gu = a.take(N * 2 * F * 2), o_mlp = a.take(N * F * 2), o_logits = a.take(N * V * 4),
               o_bias = a.take(std::min<int64_t>(group_size_, 8) * V * 4),
               o_e = a.take(std::max<int64_t>(group_size_ * r, 8) * 2), o_z = a.take(N * 4), o_tok = a.take(N * 4),
               o_feat = a.take(pending_max_ * fw * 4), o_featbf = a.take(pending_max_ * fw * 2);
  void* act = x.alloc(a.size);
  s.x = s.at<float>(act, o_x);
  s.h = s.at<bf16_t>(act, o_h);
  s.qkv = s.at<bf16_t>(act, o_qkv);
  s.q = s.at<bf16_t>(act, o_q);
  s.attn = s.at<bf16_t>(act, o_attn);
  s.delta = s.at<bf16_t>(act, o_delta);
  s.gu = s.at<bf16_t>(act, o_gu);
  s.mlp = s.at<bf16_t>(act, o_mlp);
  s.logits = s.at<float>(act, o_logits);
  s.bias = s.at<float>(act, o_bias);
  s.e = s.at<bf16_t>(act, o_e);
  s.z = s.at<float>(act, o_z);
  s.tokens = s.at<int32_t>(act, o_tok);
  s.feat = s.at<float>(act, o_feat);
  s.feat_bf = s.at<bf16_t>(act, o_featbf);
  const int32_t max_splits = cuda::attention_n_splits(cap_, k_split_len);
  const size_t ws = cuda::paged_attention_workspace_bytes(N, static_cast<int32_t>(c_.n_head),
                                                          static_cast<int32_t>(c_.head_dim), max_splits);
  if (ws > 0) s.attn_ws = x.alloc(ws);

  layout m;
  s.o_ids = m.take(N * 4);
  s.o_pos = m.take(N * 4);
  s.o_slots = m.take(N * 4);
  s.o_cu = m.take((N + 1) * 4);
  s.o_kv = m.take(N * 4);
  s.o_bt = m.take(N * 4);
  s.o_items = m.take(N * sizeof(cuda::attention_work_item));
  s.meta_bytes = m.size;
  s.meta_host = pinned_buffer(m.size);
  s.meta_dev = x.alloc(m.size);
  s.stage = std::make_unique<feature_staging>(x, s.feat, pending_max_, static_cast<int32_t>(c_.target_layers.size()),
                                              c_.target_n_embd);
  s.ctx_meta_host = pinned_buffer(static_cast<size_t>(2 * pending_max_) * 4);
  s.ctx_meta_dev = static_cast<int32_t*>(x.alloc(static_cast<size_t>(2 * pending_max_) * 4));
  s.out_host = pinned_buffer(static_cast<size_t>(2 * N) * 4);
  s.logits_host = pinned_buffer(static_cast<size_t>(group_size_ * V) * 4);
  x.finish_uploads();
}

cuda_block_drafter::~cuda_block_drafter() = default;

slot_kv_cache cuda_block_drafter::kv_cache(const device_layer& L) const { return {L.k_cache, L.v_cache, cap_, p_.max_slots}; }

size_t cuda_block_drafter::device_bytes() const { return d_->ctx.device_bytes(); }

cuda_block_drafter::slot_info& cuda_block_drafter::open_slot(int32_t slot) {
  if (slot < 0 || slot >= p_.max_slots || !slots_[static_cast<size_t>(slot)].open)
    throw invalid_argument_error("cuda_block_drafter: slot " + std::to_string(slot) + " is not open");
  return slots_[static_cast<size_t>(slot)];
}

int32_t cuda_block_drafter::context_rows(int32_t slot) const {
  if (slot < 0 || slot >= p_.max_slots) return 0;
  return slots_[static_cast<size_t>(slot)].n_rows;
}

namespace {

// Queued context rows of `slot` at positions >= from are not written when flushed.
void drop_pending(int32_t* slots, const int32_t* pos, int32_t n, int32_t cap, int32_t slot, int32_t from) {
  for (int32_t i = 0; i < n; ++i)
    if (slots[i] >= 0 && slots[i] / cap == slot && pos[i] >= from) slots[i] = -1;
}

}  // namespace

void cuda_block_drafter::begin(int32_t slot, std::span<const int32_t>) {
  if (slot < 0 || slot >= p_.max_slots)
    throw invalid_argument_error("cuda_block_drafter: slot " + std::to_string(slot) + " out of range [0, " +
                                 std::to_string(p_.max_slots) + ")");
  int32_t* ms = d_->at<int32_t>(d_->ctx_meta_host, 0);
  drop_pending(ms, ms + pending_max_, pending_rows_, cap_, slot, 0);
  slot_info& s = slots_[static_cast<size_t>(slot)];
  s.open = true;
  s.n_rows = 0;
  s.smp.smp.reset();
}

void cuda_block_drafter::end(int32_t slot) {
  slot_info& s = open_slot(slot);
  int32_t* ms = d_->at<int32_t>(d_->ctx_meta_host, 0);
  drop_pending(ms, ms + pending_max_, pending_rows_, cap_, slot, 0);
  s.open = false;
  s.n_rows = 0;
  s.smp.smp.reset();
}

void cuda_block_drafter::rollback(int32_t slot, int32_t n_context) {
  slot_info& s = open_slot(slot);
  s.n_rows = std::max(0, std::min(s.n_rows, n_context));
  int32_t* ms = d_->at<int32_t>(d_->ctx_meta_host, 0);
  drop_pending(ms, ms + pending_max_, pending_rows_, cap_, slot, s.n_rows);
}

void cuda_block_drafter::on_commit(int32_t slot, const commit_info& c) {
  slot_info& s = open_slot(slot);
  const target_features& f = c.features;
  const int32_t pos0 = c.features_pos0;
  if (!check_commit_features(f, pos0, s.n_rows, c_, p_.max_ctx, "cuda_block_drafter", caps_.reads_device_features))
    return;
  device_state& d = *d_;
  // Rows re-sent for known positions replace the queued ones.
  int32_t* ms = d.at<int32_t>(d.ctx_meta_host, 0);
  drop_pending(ms, ms + pending_max_, pending_rows_, cap_, slot, pos0);
  for (int32_t i = 0; i < f.n_rows; ++i) {
    if (!d.stage->fits(f)) flush_context();  // full, or the queued rows came the other way
    if (d.staged_pending) {  // the pinned metadata is still being read by the last upload
      DSPARK_CUDA_CHECK(cudaEventSynchronize(d.staged));
      d.staged_pending = false;
    }
    d.stage->add(f, i);
    ms = d.at<int32_t>(d.ctx_meta_host, 0);
    ms[pending_rows_] = slot * cap_ + pos0 + i;
    ms[pending_max_ + pending_rows_] = pos0 + i;
    ++pending_rows_;
  }
  s.n_rows = pos0 + f.n_rows;
}

void cuda_block_drafter::flush_context() {
  if (pending_rows_ == 0) return;
  device_state& s = *d_;
  const int32_t n = pending_rows_;
  const int64_t d = c_.n_embd, fw = c_.feature_width();
  cudaStream_t st = s.stream;
  s.stage->flush();  // rows [0, n) of s.feat
  // Slots then positions, as one copy of the first n of each half (pending_max apart).
  int32_t* md = s.ctx_meta_dev;
  DSPARK_CUDA_CHECK(cudaMemcpyAsync(md, s.ctx_meta_host.data(), static_cast<size_t>(2 * pending_max_) * 4,
                                    cudaMemcpyHostToDevice, st));
  DSPARK_CUDA_CHECK(cudaEventRecord(s.staged, st));
  s.staged_pending = true;
  pending_rows_ = 0;

  cuda::convert_f32_to_bf16(s.feat, n * fw, s.feat_bf, st);
  // c_t = RMSNorm(fc . F_t; hidden_norm), the input of every layer's K/V.
  s.ctx.linear(s.fc, s.feat_bf, n, d, fw, s.x);
  cuda::rms_norm_residual(s.x, nullptr, s.hidden_norm, static_cast<float>(c_.rms_eps), s.h, n, d, st);
  for (size_t il = 0; il < s.layers.size(); ++il) {
    const device_layer& L = s.layers[il];
    drafter_qkv_rope_write(s.ctx, c_, L.wqkv, s.h, d, n, md + pending_max_, md, s.inv_freq, L.q_norm, L.k_norm, s.qkv,
                           s.q, kv_cache(L));
  }
}

void cuda_block_drafter::before_target_forward() { d_->stage->launch(); }

void cuda_block_drafter::propose(std::span<const propose_request> batch, draft_batch& out) {
  // Requests that can draft this round, in groups of at most group_size_.
  group_request grp[k_max_group];
  int32_t n = 0;
  for (const propose_request& r : batch) {
    slot_info& s = open_slot(r.slot);
    if (r.context.empty()) continue;
    const int32_t pos = static_cast<int32_t>(r.context.size()) - 1;
    const int32_t g = std::min({r.max_drafts, c_.block_size, out.params().gamma_max - out.length(r.slot)});
    if (g <= 0 || s.n_rows < pos || pos > p_.max_ctx) continue;
    s.n_rows = pos;  // rows past x0's position (never expected) are dropped
    grp[n++] = {&r, g};
    if (n == group_size_) {
      run_group({grp, static_cast<size_t>(n)}, out);
      n = 0;
    }
  }
  if (n > 0) run_group({grp, static_cast<size_t>(n)}, out);
}

void cuda_block_drafter::run_group(std::span<const group_request> grp, draft_batch& out) {
  flush_context();
  device_state& s = *d_;
  cudaStream_t st = s.stream;
  const int32_t R = static_cast<int32_t>(grp.size()), G = c_.block_size, N = G * R;
  const int64_t V = c_.target_n_vocab;

  // Metadata, k-major rows (k * R + i): token, position, cache slot; each row is a one-token
  // pseudo-sequence over its request's whole block (kv_len = s + G) in the request's cache block.
  int32_t* ids = s.at<int32_t>(s.meta_host, s.o_ids);
  int32_t* pos = s.at<int32_t>(s.meta_host, s.o_pos);
  int32_t* slots = s.at<int32_t>(s.meta_host, s.o_slots);
  int32_t* cu = s.at<int32_t>(s.meta_host, s.o_cu);
  int32_t* kv = s.at<int32_t>(s.meta_host, s.o_kv);
  int32_t* bt = s.at<int32_t>(s.meta_host, s.o_bt);
  auto* items = s.at<cuda::attention_work_item>(s.meta_host, s.o_items);
  int32_t max_kv = 0, g_max = 0;
  bool sampled = false;
  for (int32_t k = 0; k < G; ++k)
    for (int32_t i = 0; i < R; ++i) {
      const propose_request& r = *grp[static_cast<size_t>(i)].r;
      const int32_t p0 = static_cast<int32_t>(r.context.size()) - 1, row = k * R + i;
      ids[row] = k == 0 ? r.context.back() : c_.mask_token_id;
      pos[row] = p0 + k;
      slots[row] = r.slot * cap_ + p0 + k;
      kv[row] = p0 + G;
      bt[row] = r.slot;
      cu[row] = row;
      items[row] = {row, 0, 1};
      max_kv = std::max(max_kv, p0 + G);
    }
  cu[N] = N;
  for (const group_request& q : grp) {
    g_max = std::max(g_max, q.g);
    sampled |= p_.sampled && q.r->sampling != nullptr && q.r->sampling->temperature > 0.0f;
  }

  int32_t* tok_host = s.at<int32_t>(s.out_host, 0);
  float* z_host = s.at<float>(s.out_host, static_cast<size_t>(N) * 4);
  if (!sampled) {
    // Greedy: the whole round (metadata upload, forward, sequential head, result download) is
    // one CUDA graph per (requests, drafts) shape, captured on its second occurrence; its
    // attention runs the splits of the longest context (empty splits cost little, and the
    // combine reads only the splits a row reaches).
    const int32_t all_splits = cuda::attention_n_splits(cap_, k_split_len);
    s.ctx.run_graph({R, g_max}, [&] {
      enqueue_forward(R, g_max, all_splits);
      enqueue_greedy_head(R, g_max);
    });
    record(R, g_max);
    DSPARK_CUDA_CHECK(cudaStreamSynchronize(st));
    for (int32_t i = 0; i < R; ++i) {
      const group_request& q = grp[static_cast<size_t>(i)];
      for (int32_t k = 0; k < q.g; ++k) {
        const float conf =
            c_.confidence ? sigmoid(z_host[k * R + i] / c_.confidence_temperatures[static_cast<size_t>(k)]) : 1.0f;
        out.push_one_hot(q.r->slot, tok_host[k * R + i], conf);
      }
    }
    return;
  }

  // Sampled rounds (eager): per draft position, draw on the host from exactly these logits, then
  // hand the tokens back for the next position's Markov bias.
  enqueue_forward(R, g_max, cuda::attention_n_splits(max_kv, k_split_len));
  for (int32_t k = 0; k < g_max; ++k) {
    enqueue_head_position(R, k);
    float* lh = s.at<float>(s.logits_host, 0);
    DSPARK_CUDA_CHECK(cudaMemcpyAsync(lh, s.logits + static_cast<int64_t>(k) * R * V, static_cast<size_t>(R * V) * 4,
                                      cudaMemcpyDeviceToHost, st));
    if (c_.confidence)
      DSPARK_CUDA_CHECK(cudaMemcpyAsync(z_host + k * R, s.z + k * R, static_cast<size_t>(R) * 4,
                                        cudaMemcpyDeviceToHost, st));
    DSPARK_CUDA_CHECK(cudaStreamSynchronize(st));
    for (int32_t i = 0; i < R; ++i) {
      const group_request& q = grp[static_cast<size_t>(i)];
      const float conf =
          c_.confidence ? sigmoid(z_host[k * R + i] / c_.confidence_temperatures[static_cast<size_t>(k)]) : 1.0f;
      // Past its g the request keeps its previous token (its later rows are never read).
      tok_host[k * R + i] = k < q.g ? push_draft(*q.r, lh + static_cast<int64_t>(i) * V, V, p_.sampled, conf,
                                                 slots_[static_cast<size_t>(q.r->slot)].smp, out)
                                    : (k == 0 ? q.r->context.back() : tok_host[(k - 1) * R + i]);
    }
    DSPARK_CUDA_CHECK(cudaMemcpyAsync(s.tokens + k * R, tok_host + k * R, static_cast<size_t>(R) * 4,
                                      cudaMemcpyHostToDevice, st));
  }
  record(R, g_max);
  if (record_) DSPARK_CUDA_CHECK(cudaStreamSynchronize(st));
}

void cuda_block_drafter::enqueue_forward(int32_t R, int32_t g_max, int32_t n_splits) {
  device_state& s = *d_;
  cudaStream_t st = s.stream;
  const int32_t N = c_.block_size * R;
  const int64_t d = c_.n_embd, qd = c_.q_dim(), F = c_.n_ff, V = c_.target_n_vocab;
  const float eps = static_cast<float>(c_.rms_eps);
  DSPARK_CUDA_CHECK(cudaMemcpyAsync(s.meta_dev, s.meta_host.data(), s.meta_bytes, cudaMemcpyHostToDevice, st));
  cuda::embedding_gather(s.embed, V, d, s.at<int32_t>(s.meta_dev, s.o_ids), N, s.x, st);
  for (size_t il = 0; il < s.layers.size(); ++il) {
    const device_layer& L = s.layers[il];
    cuda::rms_norm_residual(s.x, il == 0 ? nullptr : s.delta, L.attn_norm, eps, s.h, N, d, st);
    drafter_qkv_rope_write(s.ctx, c_, L.wqkv, s.h, d, N, s.at<int32_t>(s.meta_dev, s.o_pos),
                           s.at<int32_t>(s.meta_dev, s.o_slots), s.inv_freq, L.q_norm, L.k_norm, s.qkv, s.q, kv_cache(L));

    drafter_slot_attention(s.ctx, c_, s.q, kv_cache(L), s.at<int32_t>(s.meta_dev, s.o_cu),
                           s.at<int32_t>(s.meta_dev, s.o_kv), s.at<int32_t>(s.meta_dev, s.o_bt),
                           s.at<cuda::attention_work_item>(s.meta_dev, s.o_items), N, k_split_len, n_splits, s.attn_ws,
                           s.attn);

    s.ctx.linear(L.wo, s.attn, N, d, qd, s.delta);
    cuda::rms_norm_residual(s.x, s.delta, L.ffn_norm, eps, s.h, N, d, st);
    s.ctx.linear(L.wgu, s.h, N, 2 * F, d, s.gu);
    cuda::silu_mul(s.gu, s.gu + F, 2 * F, s.mlp, N, F, st);
    s.ctx.linear(L.wdown, s.mlp, N, d, F, s.delta);
  }
  cuda::rms_norm_residual(s.x, s.delta, s.norm, eps, s.h, N, d, st);
  // Base logits of the rows that draft (k < g_max).
  s.ctx.linear(s.head, s.h, static_cast<int64_t>(g_max) * R, V, d, s.logits);
}

void cuda_block_drafter::enqueue_head_position(int32_t R, int32_t k) {
  device_state& s = *d_;
  cudaStream_t st = s.stream;
  const int64_t d = c_.n_embd, V = c_.target_n_vocab, rk = c_.markov_rank;
  // prev_0 = x0 (row k = 0's ids), prev_{k+1} = the token drafted at k.
  const int32_t* prev = k == 0 ? s.at<int32_t>(s.meta_dev, s.o_ids) : s.tokens + (k - 1) * R;
  float* lk = s.logits + static_cast<int64_t>(k) * R * V;
  const bool markov = c_.markov == markov_kind::vanilla;
  if (markov) {
    cuda::embedding_gather(s.w1, V, rk, prev, R, s.e, st);
    // L_k = U_k + w2 . w1[prev_k]
    if (R <= cuda::k_gemv_max_tokens) {
      cuda::gemv_bf16(s.w2, s.e, R, V, rk, s.bias, st);
      cuda::add_f32(lk, s.bias, static_cast<int64_t>(R) * V, st);
    } else {
      s.ctx.gemm().gemm(s.w2, s.e, R, V, rk, lk, 1.f, st);
    }
  }
  if (c_.confidence)
    cuda::confidence_logits(s.h + static_cast<int64_t>(k) * R * d, d, markov ? s.e : nullptr, rk, s.conf_w, s.conf_b,
                            R, s.z + k * R, st);
}

void cuda_block_drafter::enqueue_greedy_head(int32_t R, int32_t g_max) {
  device_state& s = *d_;
  cudaStream_t st = s.stream;
  const int32_t N = c_.block_size * R;
  const int64_t V = c_.target_n_vocab;
  for (int32_t k = 0; k < g_max; ++k) {
    enqueue_head_position(R, k);
    cuda::argmax_rows(s.logits + static_cast<int64_t>(k) * R * V, R, V, V, s.tokens + k * R, st);
  }
  DSPARK_CUDA_CHECK(cudaMemcpyAsync(s.out_host.data(), s.tokens, static_cast<size_t>(g_max) * R * 4,
                                    cudaMemcpyDeviceToHost, st));
  if (c_.confidence)
    DSPARK_CUDA_CHECK(cudaMemcpyAsync(s.at<float>(s.out_host, static_cast<size_t>(N) * 4), s.z,
                                      static_cast<size_t>(g_max) * R * 4, cudaMemcpyDeviceToHost, st));
}

void cuda_block_drafter::record(int32_t R, int32_t g_max) {
  if (!record_) return;
  device_state& s = *d_;
  s.rec_logits.resize(static_cast<size_t>(g_max) * R * c_.target_n_vocab);
  s.rec_conf.assign(static_cast<size_t>(g_max) * R, 0.f);
  DSPARK_CUDA_CHECK(cudaMemcpyAsync(s.rec_logits.data(), s.logits, s.rec_logits.size() * 4, cudaMemcpyDeviceToHost,
                                    s.stream));
  if (c_.confidence)
    DSPARK_CUDA_CHECK(cudaMemcpyAsync(s.rec_conf.data(), s.z, s.rec_conf.size() * 4, cudaMemcpyDeviceToHost, s.stream));
  rec_r_ = R;
}

std::vector<float> cuda_block_drafter::recorded_logits(int32_t i) const {
  std::vector<float> v;
  const int64_t V = c_.target_n_vocab;
  const size_t G = d_->rec_logits.size() / static_cast<size_t>(std::max(1, rec_r_) * V);
  for (size_t k = 0; k < G; ++k) {
    const float* row = d_->rec_logits.data() + (k * rec_r_ + i) * V;
    v.insert(v.end(), row, row + V);
  }
  return v;
}

std::vector<float> cuda_block_drafter::recorded_conf(int32_t i) const {
  std::vector<float> v;
  const size_t G = d_->rec_conf.size() / static_cast<size_t>(std::max(1, rec_r_));
  for (size_t k = 0; k < G; ++k) v.push_back(d_->rec_conf[k * rec_r_ + i]);
  return v;
}

}  // namespace dspark

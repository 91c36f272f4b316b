// CPU forward pass over a ragged batch: validation, KV reservation, the layer loop, logits.
#include "engine/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <thread>

#include "common/error.h"
#include "engine/naive_ops.h"

namespace dspark {

namespace {

struct aligned_free {
  void operator()(void* p) const { std::free(p); }
};

// Base RoPE inverse frequencies with Llama 3.1 scaling or per-dimension divisors applied.
std::vector<double> rope_inv_freqs(const model_config& c) {
  const int64_t half = c.n_rot / 2;
  std::vector<double> f(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) {
    f[i] = std::pow(c.rope_theta, -2.0 * static_cast<double>(i) / static_cast<double>(c.n_rot));
    if (!c.rope_freq_factors.empty()) f[i] /= c.rope_freq_factors[i];
  }
  const auto& s = c.rope_scaling;
  if (s.enabled) {
    const double pi = 3.14159265358979323846;
    const double low_wavelen = s.original_max_position / s.low_freq_factor;
    const double high_wavelen = s.original_max_position / s.high_freq_factor;
    for (auto& v : f) {
      const double wavelen = 2 * pi / v;
      if (wavelen < high_wavelen) continue;  // high frequencies: unchanged
      if (wavelen > low_wavelen) {
        v /= s.factor;  // low frequencies: interpolated
      } else {
        const double smooth = (s.original_max_position / wavelen - s.low_freq_factor) /
                              (s.high_freq_factor - s.low_freq_factor);
        v = (1 - smooth) * v / s.factor + smooth * v;
      }
    }
  }
  return f;
}

}  // namespace

int default_thread_count() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

struct cpu_backend::buffers {
  std::vector<float> x;         // [T, n_embd] residual stream
  std::vector<float> xn;        // [T, n_embd] normed input / projection output
  std::vector<float> q;         // [T, n_head * head_dim]
  std::vector<float> k;         // [T, n_head_kv * head_dim]
  std::vector<float> v;         // [T, n_head_kv * head_dim]
  std::vector<float> attn;      // [T, n_head * head_dim]
  std::vector<float> gate;      // [T, n_ff]
  std::vector<float> up;        // [T, n_ff]
  std::vector<float> rows;      // [R, n_embd] final-normed logit rows
  std::unique_ptr<float[]> logits;  // [R, n_vocab]
  std::vector<float> hidden;    // [max_capture_layers][R][n_embd]
  std::vector<double> inv_freq; // [n_rot / 2]
  std::vector<float> rope_cos;  // [T, n_rot / 2]
  std::vector<float> rope_sin;  // [T, n_rot / 2]
  std::vector<float> scores;    // [n_threads, n_ctx] attention scratch
  std::vector<int32_t> tok_seq; // [T] sequence of each token
  std::vector<int32_t> tok_pos; // [T] position of each token in its sequence
  std::vector<int32_t> out_tok; // [R] token index of each logit row
  std::vector<int32_t> seq_seen;    // [n_seq_max] batch validation marks
  std::vector<int32_t> capture_slot;  // [n_layer] slot in `hidden`, -1 when not captured
  std::unique_ptr<void, aligned_free> workspace;  // matmul scratch, 64-byte aligned
};

cpu_backend::cpu_backend(const model_config& c, const llama_weights& w,
                         const cpu_backend_options& opt)
    : c_(c),
      w_(w),
      opt_(opt),
      pool_(opt.n_threads > 0 ? opt.n_threads : default_thread_count()),
      kv_(kv_cache_params{c.n_layer, c.n_head_kv, c.head_dim, opt.n_seq_max,
                          opt.n_ctx > 0 ? opt.n_ctx
                                        : static_cast<int32_t>(std::min<int64_t>(c.n_ctx_train, 4096)),
                          opt.kv_block_size, opt.kv_blocks}),
      buf_(std::make_unique<buffers>()) {
  if (opt.max_tokens_per_step <= 0)
    throw invalid_argument_error("cpu_backend: max_tokens_per_step must be > 0, got " +
                                 std::to_string(opt.max_tokens_per_step));
  if (opt.max_logit_rows < 0 || opt.max_capture_layers < 0)
    throw invalid_argument_error("cpu_backend: max_logit_rows and max_capture_layers must be >= 0");
  limits_.max_tokens_per_step = opt.max_tokens_per_step;
  limits_.max_logit_rows = opt.max_logit_rows > 0 ? opt.max_logit_rows : opt.max_tokens_per_step;
  limits_.max_capture_layers = opt.max_capture_layers;
  limits_.n_seq_max = opt.n_seq_max;
  limits_.n_ctx = kv_.params().n_ctx;
  limits_.n_vocab = c.n_vocab;
  limits_.n_embd = c.n_embd;

  const size_t T = static_cast<size_t>(limits_.max_tokens_per_step);
  const size_t R = static_cast<size_t>(limits_.max_logit_rows);
  buffers& b = *buf_;
  b.x.resize(T * c.n_embd);
  b.xn.resize(T * c.n_embd);
  b.q.resize(T * c.q_dim());
  b.k.resize(T * c.kv_dim());
  b.v.resize(T * c.kv_dim());
  b.attn.resize(T * c.q_dim());
  b.gate.resize(T * c.n_ff);
  b.up.resize(T * c.n_ff);
  b.rows.resize(R * c.n_embd);
  b.logits.reset(new float[R * c.n_vocab]);
  b.hidden.resize(static_cast<size_t>(limits_.max_capture_layers) * R * c.n_embd);
  const auto f = rope_inv_freqs(c);
  b.inv_freq.assign(f.begin(), f.end());
  b.rope_cos.resize(T * (c.n_rot / 2));
  b.rope_sin.resize(T * (c.n_rot / 2));
  b.scores.resize(static_cast<size_t>(pool_.n_threads()) * limits_.n_ctx);
  b.tok_seq.resize(T);
  b.tok_pos.resize(T);
  b.out_tok.resize(R);
  b.seq_seen.assign(static_cast<size_t>(opt.n_seq_max), 0);
  b.capture_slot.assign(static_cast<size_t>(c.n_layer), -1);

  size_t ws = matmul_workspace_size(w.output, static_cast<int64_t>(R));
  for (const auto& l : w.layers)
    for (const tensor_view* m : {&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down})
      ws = std::max(ws, matmul_workspace_size(*m, static_cast<int64_t>(T)));
  ws = (ws + 63) / 64 * 64;
  b.workspace.reset(std::aligned_alloc(64, ws));
  if (!b.workspace) throw invalid_argument_error("cpu_backend: cannot allocate " +
                                                 std::to_string(ws) + " bytes of matmul scratch");
}

cpu_backend::~cpu_backend() = default;

std::optional<int32_t> cpu_backend::open_sequence() { return kv_.open_sequence(); }
void cpu_backend::free_sequence(int32_t seq) { kv_.free_sequence(seq); }
int32_t cpu_backend::sequence_length(int32_t seq) const { return kv_.length(seq); }
void cpu_backend::truncate(int32_t seq, int32_t new_len) { kv_.truncate(seq, new_len); }

void cpu_backend::validate(const forward_batch& b) {
  if (b.seqs.empty()) throw invalid_argument_error("forward: the batch has no sequences");
  int64_t n_tok = 0, n_rows = 0;
  std::fill(buf_->seq_seen.begin(), buf_->seq_seen.end(), 0);
  for (const batch_sequence& s : b.seqs) {
    if (!kv_.is_open(s.seq_id))
      throw invalid_argument_error("forward: sequence " + std::to_string(s.seq_id) + " is not open");
    if (buf_->seq_seen[s.seq_id]++)
      throw invalid_argument_error("forward: sequence " + std::to_string(s.seq_id) +
                                   " appears twice in the batch");
    if (s.n_tokens < 1)
      throw invalid_argument_error("forward: n_tokens must be >= 1, got " +
                                   std::to_string(s.n_tokens));
    if (s.n_logits < 0 || s.n_logits > s.n_tokens)
      throw invalid_argument_error("forward: n_logits must be in [0, n_tokens = " +
                                   std::to_string(s.n_tokens) + "], got " +
                                   std::to_string(s.n_logits));
    n_tok += s.n_tokens;
    n_rows += s.n_logits;
  }
  if (n_tok != static_cast<int64_t>(b.tokens.size()))
    throw invalid_argument_error("forward: sum of n_tokens (" + std::to_string(n_tok) +
                                 ") differs from the token count (" +
                                 std::to_string(b.tokens.size()) + ")");
  if (n_tok > limits_.max_tokens_per_step)
    throw invalid_argument_error("forward: " + std::to_string(n_tok) +
                                 " tokens in one step, at most max_tokens_per_step = " +
                                 std::to_string(limits_.max_tokens_per_step));
  if (n_rows > limits_.max_logit_rows)
    throw invalid_argument_error("forward: " + std::to_string(n_rows) +
                                 " logit rows in one step, at most max_logit_rows = " +
                                 std::to_string(limits_.max_logit_rows));
  for (int32_t t : b.tokens)
    if (t < 0 || t >= c_.n_vocab)
      throw invalid_argument_error("forward: token id " + std::to_string(t) + " outside [0, " +
                                   std::to_string(c_.n_vocab) + ")");
  if (static_cast<int64_t>(b.capture_layers.size()) > limits_.max_capture_layers)
    throw invalid_argument_error("forward: " + std::to_string(b.capture_layers.size()) +
                                 " capture layers, at most max_capture_layers = " +
                                 std::to_string(limits_.max_capture_layers));
  for (int32_t l : b.capture_layers)
    if (l < 0 || l >= c_.n_layer)
      throw invalid_argument_error("forward: capture layer " + std::to_string(l) +
                                   " outside [0, " + std::to_string(c_.n_layer) + ")");
}

// Two-phase: checks every sequence fits before taking any block, so a failure changes nothing.
forward_status cpu_backend::reserve_kv(const forward_batch& b) {
  int64_t need = 0;
  for (const batch_sequence& s : b.seqs) {
    const int32_t n_total = kv_.length(s.seq_id) + s.n_tokens;
    if (n_total > kv_.params().n_ctx) return forward_status::out_of_kv;
    need += kv_.blocks_needed(s.seq_id, n_total);
  }
  if (need > kv_.free_blocks()) return forward_status::out_of_kv;
  for (const batch_sequence& s : b.seqs) kv_.reserve(s.seq_id, kv_.length(s.seq_id) + s.n_tokens);
  return forward_status::ok;
}

// Positions, sequence of each token, the logit rows, and the RoPE angles of each token.
void cpu_backend::plan_rows(const forward_batch& b) {
  buffers& bf = *buf_;
  int64_t t = 0, r = 0;
  for (const batch_sequence& s : b.seqs) {
    const int32_t len = kv_.length(s.seq_id);
    for (int32_t j = 0; j < s.n_tokens; ++j, ++t) {
      bf.tok_seq[t] = s.seq_id;
      bf.tok_pos[t] = len + j;
      if (j >= s.n_tokens - s.n_logits) bf.out_tok[r++] = static_cast<int32_t>(t);
    }
  }
  const int64_t half = c_.n_rot / 2;
  for (int64_t i = 0; i < t; ++i) {
    for (int64_t d = 0; d < half; ++d) {
      const double angle = bf.tok_pos[i] * bf.inv_freq[d];
      bf.rope_cos[i * half + d] = static_cast<float>(std::cos(angle));
      bf.rope_sin[i * half + d] = static_cast<float>(std::sin(angle));
    }
  }
  std::fill(bf.capture_slot.begin(), bf.capture_slot.end(), -1);
  for (size_t i = 0; i < b.capture_layers.size(); ++i)
    bf.capture_slot[b.capture_layers[i]] = static_cast<int32_t>(i);
}

void cpu_backend::embed(const forward_batch& b) {
  const int64_t n = static_cast<int64_t>(b.tokens.size());
  pool_.parallel_for(n, 1, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t)
      embedding_row(w_.token_embd, b.tokens[t], buf_->x.data() + t * c_.n_embd);
  });
}

forward_output cpu_backend::forward(const forward_batch& b) {
  validate(b);
  forward_output out;
  out.status = reserve_kv(b);
  if (out.status != forward_status::ok) return out;
  plan_rows(b);
  embed(b);
  const int64_t n_tok = static_cast<int64_t>(b.tokens.size());
  int64_t n_rows = 0;
  for (const batch_sequence& s : b.seqs) n_rows += s.n_logits;

  for (int il = 0; il < c_.n_layer; ++il) {
    attention_block(il, n_tok);
    mlp_block(il, n_tok);
    if (buf_->capture_slot[il] >= 0) capture(buf_->capture_slot[il], n_rows);
  }
  lm_head(n_rows);
  for (const batch_sequence& s : b.seqs) kv_.commit(s.seq_id, kv_.length(s.seq_id) + s.n_tokens);

  out.n_rows = n_rows;
  out.logits = buf_->logits.get();
  out.hidden = b.capture_layers.empty() ? nullptr : buf_->hidden.data();
  return out;
}

void cpu_backend::attention_block(int il, int64_t n_tok) {
  buffers& b = *buf_;
  const layer_weights& l = w_.layers[il];
  const int64_t E = c_.n_embd, qd = c_.q_dim(), kvd = c_.kv_dim(), hd = c_.head_dim;
  const float eps = static_cast<float>(c_.rms_eps);
  for (int64_t t = 0; t < n_tok; ++t)
    naive::rms_norm(b.x.data() + t * E, l.attn_norm.data(), b.xn.data() + t * E, E, eps);
  void* ws = b.workspace.get();
  matmul(l.wq, b.xn.data(), n_tok, b.q.data(), ws, pool_, opt_.precision);
  matmul(l.wk, b.xn.data(), n_tok, b.k.data(), ws, pool_, opt_.precision);
  matmul(l.wv, b.xn.data(), n_tok, b.v.data(), ws, pool_, opt_.precision);

  const bool interleaved = c_.rope == rope_style::interleaved;
  const int64_t half = c_.n_rot / 2;
  for (int64_t t = 0; t < n_tok; ++t) {
    float* q = b.q.data() + t * qd;
    float* k = b.k.data() + t * kvd;
    float* v = b.v.data() + t * kvd;
    if (c_.qkv_bias) {
      for (int64_t i = 0; i < qd; ++i) q[i] += l.bq[i];
      for (int64_t i = 0; i < kvd; ++i) k[i] += l.bk[i];
      for (int64_t i = 0; i < kvd; ++i) v[i] += l.bv[i];
    }
    const float* cs = b.rope_cos.data() + t * half;
    const float* sn = b.rope_sin.data() + t * half;
    for (int64_t h = 0; h < c_.n_head; ++h) {
      if (c_.qk_norm) naive::rms_norm(q + h * hd, l.q_norm.data(), q + h * hd, hd, eps);
      naive::rope_head(q + h * hd, cs, sn, c_.n_rot, interleaved);
    }
    for (int64_t h = 0; h < c_.n_head_kv; ++h) {
      if (c_.qk_norm) naive::rms_norm(k + h * hd, l.k_norm.data(), k + h * hd, hd, eps);
      naive::rope_head(k + h * hd, cs, sn, c_.n_rot, interleaved);
    }
    std::copy(k, k + kvd, kv_.k_at(il, b.tok_seq[t], b.tok_pos[t]));
    std::copy(v, v + kvd, kv_.v_at(il, b.tok_seq[t], b.tok_pos[t]));
  }
  attend(il, n_tok);
  matmul(l.wo, b.attn.data(), n_tok, b.xn.data(), ws, pool_, opt_.precision);
  for (int64_t i = 0; i < n_tok * E; ++i) b.x[i] += b.xn[i];
}

// Causal GQA attention of every (token, head) over its sequence's cached positions [0, pos].
void cpu_backend::attend(int il, int64_t n_tok) {
  buffers& b = *buf_;
  const int64_t hd = c_.head_dim, qd = c_.q_dim(), kvd = c_.kv_dim();
  const int64_t group = c_.n_head / c_.n_head_kv;
  const int32_t bs = kv_.params().block_size;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  pool_.parallel_for(n_tok * c_.n_head, 1, [&](int64_t i0, int64_t i1, int thread) {
    float* scores = b.scores.data() + static_cast<size_t>(thread) * limits_.n_ctx;
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t t = i / c_.n_head, h = i % c_.n_head, hk = h / group;
      const float* q = b.q.data() + t * qd + h * hd;
      const int32_t seq = b.tok_seq[t], n_kv = b.tok_pos[t] + 1;
      const int32_t* table = kv_.block_table(seq);
      float mx = -INFINITY;
      for (int32_t p = 0; p < n_kv; ++p) {
        const float* k = kv_.k_block(il, table[p / bs]) + (p % bs) * kvd + hk * hd;
        float s = 0;
        for (int64_t d = 0; d < hd; ++d) s += q[d] * k[d];
        scores[p] = s * scale;
        mx = std::max(mx, scores[p]);
      }
      float sum = 0;
      for (int32_t p = 0; p < n_kv; ++p) sum += (scores[p] = std::exp(scores[p] - mx));
      float* o = b.attn.data() + t * qd + h * hd;
      std::fill(o, o + hd, 0.0f);
      for (int32_t p = 0; p < n_kv; ++p) {
        const float* v = kv_.v_block(il, table[p / bs]) + (p % bs) * kvd + hk * hd;
        const float wgt = scores[p] / sum;
        for (int64_t d = 0; d < hd; ++d) o[d] += wgt * v[d];
      }
    }
  });
}

void cpu_backend::mlp_block(int il, int64_t n_tok) {
  buffers& b = *buf_;
  const layer_weights& l = w_.layers[il];
  const int64_t E = c_.n_embd, F = c_.n_ff;
  for (int64_t t = 0; t < n_tok; ++t)
    naive::rms_norm(b.x.data() + t * E, l.ffn_norm.data(), b.xn.data() + t * E, E,
                    static_cast<float>(c_.rms_eps));
  void* ws = b.workspace.get();
  matmul(l.w_gate, b.xn.data(), n_tok, b.gate.data(), ws, pool_, opt_.precision);
  matmul(l.w_up, b.xn.data(), n_tok, b.up.data(), ws, pool_, opt_.precision);
  for (int64_t t = 0; t < n_tok; ++t) naive::silu_mul(b.gate.data() + t * F, b.up.data() + t * F, F);
  matmul(l.w_down, b.gate.data(), n_tok, b.xn.data(), ws, pool_, opt_.precision);
  for (int64_t i = 0; i < n_tok * E; ++i) b.x[i] += b.xn[i];
}

void cpu_backend::capture(int slot, int64_t n_rows) {
  buffers& b = *buf_;
  const int64_t E = c_.n_embd;
  float* dst = b.hidden.data() + static_cast<size_t>(slot) * n_rows * E;  // compact layout
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* src = b.x.data() + static_cast<int64_t>(b.out_tok[r]) * E;
    std::copy(src, src + E, dst + r * E);
  }
}

void cpu_backend::lm_head(int64_t n_rows) {
  buffers& b = *buf_;
  const int64_t E = c_.n_embd;
  for (int64_t r = 0; r < n_rows; ++r)
    naive::rms_norm(b.x.data() + static_cast<int64_t>(b.out_tok[r]) * E, w_.output_norm.data(),
                    b.rows.data() + r * E, E, static_cast<float>(c_.rms_eps));
  matmul(w_.output, b.rows.data(), n_rows, b.logits.get(), b.workspace.get(), pool_,
         opt_.precision);
}

}  // namespace dspark

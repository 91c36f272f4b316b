// CPU forward pass over a ragged batch: validation, KV reservation, the layer loop, logits.
#include "engine/cpu_backend.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <thread>

#include <sched.h>

#include "common/error.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/ops.h"

namespace dspark {

namespace {

struct aligned_free {
  void operator()(void* p) const { std::free(p); }
};

// RoPE inverse frequencies [head_dim / 2]: base (+ llama3 scaling) from the kernels, divided
// by GGUF's per-dimension factors when the file has them.
std::vector<float> inv_freqs_of(const model_config& c) {
  std::vector<float> f = rope_inv_freqs(c.head_dim, static_cast<float>(c.rope_theta), c.rope_scaling);
  for (size_t i = 0; i < c.rope_freq_factors.size(); ++i) f[i] /= c.rope_freq_factors[i];
  return f;
}

}  // namespace

int default_thread_count() {
  // The CPUs this process may run on (taskset / container limits), else all of them.
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
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
  std::vector<int32_t> argmax;  // [R] each logit row's argmax, when asked
  std::vector<float> hidden;    // [max_capture_layers][T][n_embd] (prompt rows may be captured)
  std::vector<float> inv_freq;  // [head_dim / 2] RoPE inverse frequencies
  std::unique_ptr<float[]> k_gather;  // [n_ctx, n_head_kv * head_dim] a fragmented sequence's K
  std::unique_ptr<float[]> v_gather;  // [n_ctx, n_head_kv * head_dim] ... and V
  std::vector<batch_sequence> seqs;   // [n_seq_max] the batch's sequences
  std::vector<int32_t> seq_t0;        // [n_seq_max] index of each sequence's first token
  std::vector<int32_t> seq_p0;        // [n_seq_max] length of each sequence before the step
  std::vector<int32_t> tok_seq; // [T] sequence of each token
  std::vector<int32_t> tok_pos; // [T] position of each token in its sequence
  std::vector<int32_t> out_tok; // [R] token index of each logit row
  std::vector<int32_t> cap_tok; // [T] token index of each captured row
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
  limits_.kv_block_size = kv_.params().block_size;

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
  b.argmax.resize(R);
  b.hidden.resize(static_cast<size_t>(limits_.max_capture_layers) * T * c.n_embd);
  b.inv_freq = inv_freqs_of(c);
  // Left uninitialised: only touched when a sequence's blocks are not consecutive.
  b.k_gather.reset(new float[static_cast<size_t>(limits_.n_ctx) * c.kv_dim()]);
  b.v_gather.reset(new float[static_cast<size_t>(limits_.n_ctx) * c.kv_dim()]);
  b.seqs.resize(static_cast<size_t>(opt.n_seq_max));
  b.seq_t0.resize(static_cast<size_t>(opt.n_seq_max));
  b.seq_p0.resize(static_cast<size_t>(opt.n_seq_max));
  b.tok_seq.resize(T);
  b.tok_pos.resize(T);
  b.out_tok.resize(R);
  b.cap_tok.resize(T);
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
int32_t cpu_backend::attach_prefix(int32_t seq, std::span<const int32_t> tokens) { return kv_.attach_prefix(seq, tokens); }
void cpu_backend::cache_prefix(int32_t seq, std::span<const int32_t> tokens) { kv_.cache_prefix(seq, tokens); }

void cpu_backend::validate(const forward_batch& b) {
  if (b.seqs.empty()) throw invalid_argument_error("forward: the batch has no sequences");
  validate_outputs(b.outputs);
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
    validate_capture(s);
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
  for (size_t i = 0; i < b.capture_layers.size(); ++i) {
    const int32_t l = b.capture_layers[i];
    if (l < 0 || l >= c_.n_layer)
      throw invalid_argument_error("forward: capture layer " + std::to_string(l) +
                                   " outside [0, " + std::to_string(c_.n_layer) + ")");
    for (size_t j = 0; j < i; ++j)
      if (b.capture_layers[j] == l)
        throw invalid_argument_error("forward: capture layer " + std::to_string(l) + " given twice");
  }
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

// Positions and sequence of each token, the batch's sequences, the logit rows, the captures.
void cpu_backend::plan_rows(const forward_batch& b) {
  buffers& bf = *buf_;
  int64_t t = 0, r = 0, h = 0;
  for (size_t i = 0; i < b.seqs.size(); ++i) {
    const batch_sequence& s = b.seqs[i];
    const int32_t len = kv_.length(s.seq_id);
    bf.seqs[i] = s;
    bf.seq_t0[i] = static_cast<int32_t>(t);
    bf.seq_p0[i] = len;
    for (int32_t j = 0; j < s.n_tokens; ++j, ++t) {
      bf.tok_seq[t] = s.seq_id;
      bf.tok_pos[t] = len + j;
      if (j >= s.n_tokens - s.n_logits) bf.out_tok[r++] = static_cast<int32_t>(t);
      if (j >= s.n_tokens - s.capture_count()) bf.cap_tok[h++] = static_cast<int32_t>(t);
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

forward_output cpu_backend::forward(const forward_batch& b) { return run_layers(b, static_cast<int32_t>(c_.n_layer)); }

forward_output cpu_backend::forward_prefix(const forward_batch& b, int32_t n_layers) {
  if (n_layers < 1 || n_layers > c_.n_layer)
    throw invalid_argument_error("forward_prefix: n_layers " + std::to_string(n_layers) + " outside [1, " +
                                 std::to_string(c_.n_layer) + "]");
  for (int32_t l : b.capture_layers)
    if (l >= n_layers)
      throw invalid_argument_error("forward_prefix: capture layer " + std::to_string(l) + " is not below n_layers " +
                                   std::to_string(n_layers));
  return run_layers(b, n_layers);
}

forward_output cpu_backend::run_layers(const forward_batch& b, int32_t n_layers) {
  validate(b);
  forward_output out;
  out.status = reserve_kv(b);
  if (out.status != forward_status::ok) return out;
  plan_rows(b);
  embed(b);
  const int64_t n_tok = static_cast<int64_t>(b.tokens.size());
  int64_t n_rows = 0, n_hidden = 0;
  for (const batch_sequence& s : b.seqs) {
    n_rows += s.n_logits;
    n_hidden += s.capture_count();
  }

  for (int il = 0; il < n_layers; ++il) {
    attention_block(il, n_tok, static_cast<int64_t>(b.seqs.size()));
    mlp_block(il, n_tok);
    if (buf_->capture_slot[il] >= 0) capture(buf_->capture_slot[il], n_hidden);
  }
  lm_head(n_rows);
  if (wants_argmax(b.outputs)) argmax_rows(n_rows);
  for (const batch_sequence& s : b.seqs) kv_.commit(s.seq_id, kv_.length(s.seq_id) + s.n_tokens);

  out.n_rows = n_rows;
  out.logits = wants_logits(b.outputs) ? buf_->logits.get() : nullptr;
  out.argmax = wants_argmax(b.outputs) ? buf_->argmax.data() : nullptr;
  out.hidden = b.capture_layers.empty() ? nullptr : buf_->hidden.data();
  out.n_hidden_rows = b.capture_layers.empty() ? 0 : n_hidden;
  return out;
}

void cpu_backend::attention_block(int il, int64_t n_tok, int64_t n_seqs) {
  buffers& b = *buf_;
  const layer_weights& l = w_.layers[il];
  const int64_t E = c_.n_embd, qd = c_.q_dim(), kvd = c_.kv_dim(), hd = c_.head_dim;
  const float eps = static_cast<float>(c_.rms_eps);
  for (int64_t t = 0; t < n_tok; ++t)
    rms_norm(b.x.data() + t * E, l.attn_norm.data(), eps, E, b.xn.data() + t * E);
  void* ws = b.workspace.get();
  const matmul_output qkv[] = {{&l.wq, b.q.data()}, {&l.wk, b.k.data()}, {&l.wv, b.v.data()}};
  matmul_group(qkv, 3, b.xn.data(), n_tok, ws, pool_, opt_.precision);

  for (int64_t t = 0; t < n_tok; ++t) {
    float* q = b.q.data() + t * qd;
    float* k = b.k.data() + t * kvd;
    float* v = b.v.data() + t * kvd;
    if (c_.qkv_bias) {
      add_inplace(q, l.bq.data(), qd);
      add_inplace(k, l.bk.data(), kvd);
      add_inplace(v, l.bv.data(), kvd);
    }
    if (c_.qk_norm) {
      for (int64_t h = 0; h < c_.n_head; ++h) rms_norm_inplace(q + h * hd, l.q_norm.data(), eps, hd);
      for (int64_t h = 0; h < c_.n_head_kv; ++h) rms_norm_inplace(k + h * hd, l.k_norm.data(), eps, hd);
    }
    rope_apply(q, c_.n_head, hd, b.tok_pos[t], b.inv_freq.data(), c_.rope);
    rope_apply(k, c_.n_head_kv, hd, b.tok_pos[t], b.inv_freq.data(), c_.rope);
    std::copy(k, k + kvd, kv_.k_at(il, b.tok_seq[t], b.tok_pos[t]));
    std::copy(v, v + kvd, kv_.v_at(il, b.tok_seq[t], b.tok_pos[t]));
  }
  for (int64_t i = 0; i < n_seqs; ++i) attend(il, i);
  matmul(l.wo, b.attn.data(), n_tok, b.xn.data(), ws, pool_, opt_.precision);
  add_inplace(b.x.data(), b.xn.data(), n_tok * E);
}

// Causal GQA attention of batch sequence `i`'s new tokens over its cached positions. The
// kernel wants K/V contiguous by position: a sequence whose blocks are consecutive in the pool
// (always the case for a lone sequence) is read in place, a fragmented one is gathered first.
void cpu_backend::attend(int il, int64_t i) {
  buffers& b = *buf_;
  const batch_sequence& s = b.seqs[i];
  const int32_t p0 = b.seq_p0[i], n_kv = p0 + s.n_tokens, bs = kv_.params().block_size;
  const int32_t* table = kv_.block_table(s.seq_id);
  const int32_t n_blocks = (n_kv + bs - 1) / bs;
  bool consecutive = true;
  for (int32_t j = 1; j < n_blocks && consecutive; ++j) consecutive = table[j] == table[0] + j;

  attention_args a;
  a.q = b.q.data() + static_cast<int64_t>(b.seq_t0[i]) * c_.q_dim();
  a.out = b.attn.data() + static_cast<int64_t>(b.seq_t0[i]) * c_.q_dim();
  a.n_tokens = s.n_tokens;
  a.p0 = p0;
  a.n_heads = c_.n_head;
  a.n_kv_heads = c_.n_head_kv;
  a.head_dim = c_.head_dim;
  if (consecutive) {
    a.k = kv_.k_block(il, table[0]);
    a.v = kv_.v_block(il, table[0]);
  } else {
    const int64_t block_floats = static_cast<int64_t>(bs) * c_.kv_dim();
    for (int32_t j = 0; j < n_blocks; ++j) {
      const int64_t n = std::min<int64_t>(bs, n_kv - static_cast<int64_t>(j) * bs) * c_.kv_dim();
      std::copy_n(kv_.k_block(il, table[j]), n, b.k_gather.get() + j * block_floats);
      std::copy_n(kv_.v_block(il, table[j]), n, b.v_gather.get() + j * block_floats);
    }
    a.k = b.k_gather.get();
    a.v = b.v_gather.get();
  }
  attention(a, pool_);
}

void cpu_backend::mlp_block(int il, int64_t n_tok) {
  buffers& b = *buf_;
  const layer_weights& l = w_.layers[il];
  const int64_t E = c_.n_embd, F = c_.n_ff;
  for (int64_t t = 0; t < n_tok; ++t)
    rms_norm(b.x.data() + t * E, l.ffn_norm.data(), static_cast<float>(c_.rms_eps), E,
             b.xn.data() + t * E);
  void* ws = b.workspace.get();
  const matmul_output gate_up[] = {{&l.w_gate, b.gate.data()}, {&l.w_up, b.up.data()}};
  matmul_group(gate_up, 2, b.xn.data(), n_tok, ws, pool_, opt_.precision);
  silu_mul(b.gate.data(), b.up.data(), b.gate.data(), n_tok * F);
  matmul(l.w_down, b.gate.data(), n_tok, b.xn.data(), ws, pool_, opt_.precision);
  add_inplace(b.x.data(), b.xn.data(), n_tok * E);
}

void cpu_backend::capture(int slot, int64_t n_rows) {
  buffers& b = *buf_;
  const int64_t E = c_.n_embd;
  float* dst = b.hidden.data() + static_cast<size_t>(slot) * n_rows * E;  // compact layout
  for (int64_t r = 0; r < n_rows; ++r) {
    const float* src = b.x.data() + static_cast<int64_t>(b.cap_tok[r]) * E;
    std::copy(src, src + E, dst + r * E);
  }
}

void cpu_backend::lm_head(int64_t n_rows) {
  buffers& b = *buf_;
  const int64_t E = c_.n_embd;
  for (int64_t r = 0; r < n_rows; ++r)
    rms_norm(b.x.data() + static_cast<int64_t>(b.out_tok[r]) * E, w_.output_norm.data(),
             static_cast<float>(c_.rms_eps), E, b.rows.data() + r * E);
  matmul(w_.output, b.rows.data(), n_rows, b.logits.get(), b.workspace.get(), pool_,
         opt_.precision);
}

// The kernels' argmax per row (lowest id on ties, NaN skipped), the rule plain greedy decoding
// and argmax_index() use.
void cpu_backend::argmax_rows(int64_t n_rows) {
  buffers& b = *buf_;
  const int64_t V = c_.n_vocab;
  pool_.parallel_for(n_rows, 1, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) b.argmax[r] = static_cast<int32_t>(argmax(b.logits.get() + r * V, V));
  });
}

}  // namespace dspark

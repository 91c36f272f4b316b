// The CUDA backend (see cuda_backend.h).
#include "engine/cuda/cuda_backend.h"

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>

#include "common/error.h"
#include "common/whole_number.h"
#include "engine/kv_block_pool.h"
#include "engine/cuda/gpu_runner.h"
#include "engine/cuda/gpu_weights.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemv.h"
#include "models/arch/llama_weights.h"
#include "models/arch/model_config.h"

namespace dspark::cuda {

struct cuda_backend::state {
  gpu_model_config cfg;
  cuda_backend_options opt;
  stream st;
  gpu_weights weights;
  std::unique_ptr<gpu_kv_pool> kv;
  std::unique_ptr<gpu_runner> runner;
  int32_t max_blocks_per_seq = 0;
  std::unique_ptr<kv_block_pool> blocks;  // block tables, lengths, prefix cache
  std::vector<uint8_t> seen;              // per seq id, for batch validation
};

namespace {

// The rows a decode step of n sequences runs as (one CUDA graph per bucket). Up to exact_upto
// (the hand GEMV's range) every count is its own bucket: the GEMV's cost grows with each row it
// carries (5 rows padded to 8 cost about 1.3 ms more per step on the Qwen3-8B shape, H100, by
// the measured GEMV times; kernels/cuda/NOTES.md round 8), and eight graphs are cheap. Above
// it, cuBLASLt's step time is flat within a power of two, so powers of two keep the graph
// count down.
int32_t bucket_for(int32_t n, int32_t exact_upto, int32_t max) {
  if (n <= exact_upto) return n;
  int32_t b = 1;
  while (b < n) b *= 2;
  return std::min(b, max);
}

}  // namespace

int32_t attention_split_len_for(int32_t n_seq_max) {
  if (n_seq_max <= 2) return 32;
  if (n_seq_max <= 16) return 64;
  return 128;
}

int32_t resolve_graph_max_tokens(const cuda_backend_options& opt) {
  if (opt.graph_max_tokens < 0) throw invalid_argument_error("cuda_backend: graph_max_tokens must be >= 0");
  if (opt.graph_max_tokens > 0) return opt.graph_max_tokens;
  const char* v = std::getenv("DSPARK_GRAPH_MAX_TOKENS");
  if (v == nullptr || *v == '\0') return 128;
  const std::optional<int32_t> n = whole_number<int32_t>(v);
  if (!n || *n < 1 || *n > 65536)
    throw invalid_argument_error(std::string("DSPARK_GRAPH_MAX_TOKENS must be an integer in [1, 65536], not '") + v + "'");
  return *n;
}

namespace {

// Checks the options and makes opt.device current BEFORE the state (and its stream) exists: a
// stream belongs to the device current at its creation.
void prepare_device(const cuda_backend_options& opt) {
  if (opt.n_seq_max <= 0 || opt.max_tokens_per_step <= 0 || opt.max_logit_rows < 0 || opt.max_capture_layers < 0 ||
      opt.kv_block_size <= 0 || opt.kv_blocks < 0 || !(opt.kv_memory_fraction > 0 && opt.kv_memory_fraction <= 1))
    throw invalid_argument_error("cuda_backend: invalid options (sizes must be positive, kv_memory_fraction in (0, 1])");
  if (opt.n_seq_max > opt.max_tokens_per_step)
    throw invalid_argument_error("cuda_backend: n_seq_max (" + std::to_string(opt.n_seq_max) +
                                 ") must not exceed max_tokens_per_step (" + std::to_string(opt.max_tokens_per_step) + ")");
  if (!device_available()) throw cuda_error("cuda_backend: no CUDA device");
  // Checked before cudaSetDevice: a failed call would leave its error as the thread's last
  // error, which the next kernel launch's check (cudaGetLastError) would then report.
  int n_dev = 0;
  DSPARK_CUDA_CHECK(cudaGetDeviceCount(&n_dev));
  if (opt.device < 0 || opt.device >= n_dev)
    throw invalid_argument_error("cuda_backend: device " + std::to_string(opt.device) + " does not exist (" +
                                 std::to_string(n_dev) + " CUDA devices)");
  DSPARK_CUDA_CHECK(cudaSetDevice(opt.device));
}

}  // namespace

cuda_backend::cuda_backend(const model_config& c, const llama_weights& w, const cuda_backend_options& opt)
    : st_((prepare_device(opt), std::make_unique<state>())) {
  state& s = *st_;
  s.opt = opt;
  try {
    s.cfg = gpu_config_from(c);
  } catch (const std::invalid_argument& e) {
    throw invalid_argument_error(std::string("cuda_backend: ") + e.what());
  }
  const int32_t n_ctx = opt.n_ctx > 0 ? opt.n_ctx : static_cast<int32_t>(std::min<int64_t>(c.n_ctx_train > 0 ? c.n_ctx_train : 4096, 8192));
  const int32_t bs = opt.kv_block_size;
  s.max_blocks_per_seq = (n_ctx + bs - 1) / bs;

  limits_.max_tokens_per_step = opt.max_tokens_per_step;
  limits_.max_logit_rows = opt.max_logit_rows > 0 ? opt.max_logit_rows : opt.max_tokens_per_step;
  limits_.max_capture_layers = opt.max_capture_layers;
  limits_.n_seq_max = opt.n_seq_max;
  limits_.n_ctx = n_ctx;
  limits_.n_vocab = c.n_vocab;
  limits_.n_embd = c.n_embd;
  limits_.kv_block_size = bs;

  s.weights = gpu_weights::upload(s.cfg, w, s.st.get());

  gpu_runner_options ro;
  ro.max_tokens = opt.max_tokens_per_step;
  ro.max_seqs = opt.n_seq_max;
  ro.max_rows = std::max(limits_.max_logit_rows, opt.n_seq_max);  // padded decode buckets want a row each
  ro.max_blocks_per_seq = s.max_blocks_per_seq;
  ro.max_capture_layers = opt.max_capture_layers;
  ro.split_len = opt.attention_split_len > 0 ? opt.attention_split_len : attention_split_len_for(opt.n_seq_max);
  ro.gemv_max_tokens = opt.gemv_max_tokens;
  ro.use_graphs = opt.use_graphs;
  ro.graph_max_tokens = resolve_graph_max_tokens(opt);

  int32_t n_blocks = opt.kv_blocks;
  if (n_blocks == 0) {
    size_t free_b = 0, total_b = 0;
    DSPARK_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    const size_t reserve = gpu_runner::device_bytes_for(s.cfg, ro, bs) + (256u << 20);  // + context/driver slack
    const size_t avail = free_b > reserve ? free_b - reserve : 0;
    const size_t per_block = gpu_kv_pool::bytes_per_block(s.cfg, bs);
    const size_t want = static_cast<size_t>(opt.kv_memory_fraction * static_cast<double>(avail)) / per_block;
    // Never more than every sequence at n_ctx would use.
    const size_t cap = static_cast<size_t>(opt.n_seq_max) * s.max_blocks_per_seq;
    n_blocks = static_cast<int32_t>(std::min<size_t>({want, cap, 0x7fffffffu / static_cast<size_t>(bs)}));
    if (n_blocks < s.max_blocks_per_seq)
      throw cuda_error("cuda_backend: only " + std::to_string(n_blocks) + " KV blocks fit in free device memory; one sequence of n_ctx needs " +
                       std::to_string(s.max_blocks_per_seq));
  }
  s.kv = std::make_unique<gpu_kv_pool>(s.cfg, bs, n_blocks);
  s.runner = std::make_unique<gpu_runner>(s.cfg, s.weights, *s.kv, ro);
  s.blocks = std::make_unique<kv_block_pool>(kv_block_pool_params{opt.n_seq_max, n_ctx, bs, n_blocks});
  s.seen.assign(opt.n_seq_max, 0);
}

cuda_backend::~cuda_backend() = default;

int32_t cuda_backend::kv_blocks_total() const { return st_->kv->n_blocks(); }
int32_t cuda_backend::kv_blocks_free() const { return st_->blocks->free_blocks(); }
int32_t cuda_backend::kv_block_size() const { return st_->kv->block_size(); }

void cuda_backend::check_seq(int32_t seq, const char* what) const {
  if (!st_->blocks->is_open(seq))
    throw invalid_argument_error(std::string(what) + ": sequence " + std::to_string(seq) + " is not open");
}

std::optional<int32_t> cuda_backend::open_sequence() { return st_->blocks->open_sequence(); }

void cuda_backend::free_sequence(int32_t seq) {
  check_seq(seq, "free_sequence");
  st_->blocks->free_sequence(seq);  // published blocks stay cached (evictable)
}

int32_t cuda_backend::sequence_length(int32_t seq) const {
  check_seq(seq, "sequence_length");
  return st_->blocks->length(seq);
}

void cuda_backend::truncate(int32_t seq, int32_t new_len) {
  check_seq(seq, "truncate");
  st_->blocks->truncate(seq, new_len);  // blocks stay; the next step overwrites the rolled-back slots
}

int32_t cuda_backend::attach_prefix(int32_t seq, std::span<const int32_t> tokens) {
  check_seq(seq, "attach_prefix");
  return st_->blocks->attach_prefix(seq, tokens);
}

void cuda_backend::cache_prefix(int32_t seq, std::span<const int32_t> tokens) {
  check_seq(seq, "cache_prefix");
  st_->blocks->cache_prefix(seq, tokens);
}

prefix_cache_stats cuda_backend::prefix_stats() const { return st_->blocks->stats(); }
graph_launch_stats cuda_backend::graph_stats() const { return st_->runner->graph_stats(); }

// Copy on write (kv_block_pool.h): the whole block, K and V of every layer, on the step's stream.
void cuda_backend::copy_block(const kv_block_copy& c) {
  state& s = *st_;
  const size_t elems = static_cast<size_t>(s.cfg.n_kv_head) * s.kv->block_size() * s.cfg.head_dim;  // one block, one layer
  for (int32_t l = 0; l < s.cfg.n_layer; ++l)
    for (bf16_t* base : {s.kv->k(l), s.kv->v(l)})
      DSPARK_CUDA_CHECK(cudaMemcpyAsync(base + c.dst * elems, base + c.src * elems, elems * sizeof(bf16_t),
                                        cudaMemcpyDeviceToDevice, s.st.get()));
}

forward_output cuda_backend::forward(const forward_batch& b) { return run_layers(b, 0); }

forward_output cuda_backend::forward_prefix(const forward_batch& b, int32_t n_layers) {
  const int32_t total = static_cast<int32_t>(st_->cfg.n_layer);
  if (n_layers < 1 || n_layers > total)
    throw invalid_argument_error("forward_prefix: n_layers " + std::to_string(n_layers) + " outside [1, " +
                                 std::to_string(total) + "]");
  for (int32_t l : b.capture_layers)
    if (l >= n_layers)
      throw invalid_argument_error("forward_prefix: capture layer " + std::to_string(l) + " is not below n_layers " +
                                   std::to_string(n_layers));
  return run_layers(b, n_layers == total ? 0 : n_layers);
}

// n_layers 0: every layer (forward); otherwise the prefix forward_prefix() asks for.
forward_output cuda_backend::run_layers(const forward_batch& b, int32_t n_layers) {
  state& s = *st_;
  // --- validate (nothing changes before this passes) ---
  if (b.seqs.empty()) throw invalid_argument_error("forward: the batch has no sequences");
  validate_outputs(b.outputs);
  std::fill(s.seen.begin(), s.seen.end(), 0);
  int64_t n_tok = 0, n_rows = 0;
  bool decode_only = b.capture_layers.empty();
  for (const batch_sequence& q : b.seqs) {
    check_seq(q.seq_id, "forward");
    if (s.seen[q.seq_id]++) throw invalid_argument_error("forward: sequence " + std::to_string(q.seq_id) + " appears twice in the batch");
    if (q.n_tokens < 1) throw invalid_argument_error("forward: n_tokens must be >= 1, got " + std::to_string(q.n_tokens));
    if (q.n_logits < 0 || q.n_logits > q.n_tokens)
      throw invalid_argument_error("forward: n_logits must be in [0, n_tokens = " + std::to_string(q.n_tokens) + "], got " +
                                   std::to_string(q.n_logits));
    validate_capture(q);
    decode_only &= q.n_tokens == 1 && q.n_logits == 1;
    n_tok += q.n_tokens;
    n_rows += q.n_logits;
  }
  if (n_tok != static_cast<int64_t>(b.tokens.size()))
    throw invalid_argument_error("forward: sum of n_tokens (" + std::to_string(n_tok) + ") differs from the token count (" +
                                 std::to_string(b.tokens.size()) + ")");
  if (n_tok > limits_.max_tokens_per_step)
    throw invalid_argument_error("forward: " + std::to_string(n_tok) + " tokens in one step, at most max_tokens_per_step = " +
                                 std::to_string(limits_.max_tokens_per_step));
  if (n_rows > limits_.max_logit_rows)
    throw invalid_argument_error("forward: " + std::to_string(n_rows) + " logit rows in one step, at most max_logit_rows = " +
                                 std::to_string(limits_.max_logit_rows));
  for (int32_t t : b.tokens)
    if (t < 0 || t >= limits_.n_vocab)
      throw invalid_argument_error("forward: token id " + std::to_string(t) + " outside [0, " + std::to_string(limits_.n_vocab) + ")");
  if (static_cast<int64_t>(b.capture_layers.size()) > limits_.max_capture_layers)
    throw invalid_argument_error("forward: " + std::to_string(b.capture_layers.size()) +
                                 " capture layers, at most max_capture_layers = " + std::to_string(limits_.max_capture_layers));
  for (int32_t l : b.capture_layers)
    if (l < 0 || l >= s.cfg.n_layer)
      throw invalid_argument_error("forward: capture layer " + std::to_string(l) + " outside [0, " + std::to_string(s.cfg.n_layer) + ")");

  // --- reserve KV blocks: all or nothing ---
  const int32_t bs = s.kv->block_size();
  kv_block_pool& kvb = *s.blocks;
  int64_t need = 0;
  for (const batch_sequence& q : b.seqs) {
    const int32_t n_total = kvb.length(q.seq_id) + q.n_tokens;
    if (n_total > limits_.n_ctx) return forward_output{.status = forward_status::out_of_kv};
    need += kvb.blocks_needed(q.seq_id, n_total);
  }
  if (need > kvb.free_blocks()) return forward_output{.status = forward_status::out_of_kv};
  for (const batch_sequence& q : b.seqs) {
    kv_block_copy cow;
    kvb.reserve(q.seq_id, kvb.length(q.seq_id) + q.n_tokens, &cow);
    if (cow.src >= 0) copy_block(cow);
  }

  // --- plan ---
  const gpu_runner::host_plan& p = s.runner->plan();
  const int32_t mbps = s.max_blocks_per_seq;
  const int32_t n_real = static_cast<int32_t>(b.seqs.size());
  // Decode batches are padded to a bucket only to share a graph: not past the graphed sizes.
  const int32_t bucket = bucket_for(n_real, s.opt.gemv_max_tokens, s.opt.n_seq_max);
  const int32_t n_seqs =
      decode_only && s.opt.use_graphs && bucket <= s.runner->options().graph_max_tokens ? bucket : n_real;
  int32_t t = 0, r = 0, h = 0, max_kv = 0;
  p.cu_q_lens[0] = 0;
  for (int32_t i = 0; i < n_real; ++i) {
    const batch_sequence& q = b.seqs[i];
    const int32_t len = kvb.length(q.seq_id), n_table = kvb.capacity(q.seq_id) / bs;
    const int32_t* table = kvb.block_table(q.seq_id);
    int32_t* bt = p.block_tables + static_cast<size_t>(i) * mbps;
    std::copy(table, table + n_table, bt);
    std::fill(bt + n_table, bt + mbps, 0);
    for (int32_t j = 0; j < q.n_tokens; ++j, ++t) {
      const int32_t pos = len + j;
      p.tokens[t] = b.tokens[t];
      p.positions[t] = pos;
      p.slots[t] = table[pos / bs] * bs + pos % bs;
      if (j >= q.n_tokens - q.n_logits) p.logit_rows[r++] = t;
      if (j >= q.n_tokens - q.capture_count()) p.capture_rows[h++] = t;
    }
    p.cu_q_lens[i + 1] = t;
    p.kv_lens[i] = len + q.n_tokens;
    max_kv = std::max(max_kv, p.kv_lens[i]);
  }
  for (int32_t i = n_real; i < n_seqs; ++i) {  // graph-bucket padding: reads block 0, writes nothing
    std::fill(p.block_tables + static_cast<size_t>(i) * mbps, p.block_tables + static_cast<size_t>(i + 1) * mbps, 0);
    p.tokens[t] = 0;
    p.positions[t] = 0;
    p.slots[t] = -1;
    p.logit_rows[r++] = t;
    ++t;
    p.cu_q_lens[i + 1] = t;
    p.kv_lens[i] = 1;
  }

  step_desc sd;
  sd.n_tokens = t;
  sd.n_seqs = n_seqs;
  sd.n_rows = r;
  sd.max_kv_len = std::max(max_kv, 1);
  sd.n_capture_rows = b.capture_layers.empty() ? 0 : h;
  sd.capture_layers = b.capture_layers;
  // A greedy caller's rows come back as argmax ids (n_rows int32) instead of n_rows * n_vocab
  // floats; the argmax kernel runs inside the step (and its graph), before the one sync below.
  sd.copy_logits = wants_logits(b.outputs);
  sd.copy_hidden = !b.hidden_on_device;
  sd.argmax = wants_argmax(b.outputs);
  sd.n_layers = n_layers;
  try {
    s.runner->run(sd, s.st.get());
  } catch (...) {
    // run() may have enqueued the plan's host->device copy (and copy_block its copies) before
    // it threw: let them finish before the next forward rewrites the pinned plan.
    (void)cudaStreamSynchronize(s.st.get());
    throw;
  }
  s.st.synchronize();  // the one host sync of the step

  for (const batch_sequence& q : b.seqs) kvb.commit(q.seq_id, kvb.length(q.seq_id) + q.n_tokens);
  forward_output out;
  out.status = forward_status::ok;
  out.n_rows = n_rows;
  out.logits = sd.copy_logits ? s.runner->host_logits() : nullptr;
  out.argmax = sd.argmax ? s.runner->host_argmax() : nullptr;
  out.hidden = b.capture_layers.empty() || !sd.copy_hidden ? nullptr : s.runner->host_hidden();
  out.n_hidden_rows = b.capture_layers.empty() ? 0 : h;
  if (!b.capture_layers.empty()) {
    out.hidden_device = s.runner->device_hidden();
    out.hidden_device_layer_stride = s.runner->device_hidden_layer_stride();
    out.hidden_stream = s.st.get();
  }
  return out;
}

std::string profile_tag(int device) {
  cudaDeviceProp prop{};
  DSPARK_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  // "decode buckets exact to 8": profiles measured when 5-7 decode rows were padded to 8 (before
  // 2026-12-07, eleventh session) priced those steps as 8-row ones; their key differs
  std::string tag = std::string("cuda ") + prop.name + ", gemv " + gemv_name(gemv_kind()) +
                    ", decode buckets exact to " + std::to_string(k_gemv_max_tokens);
  // PDL for steps of 2-8 tokens (2026-12-07, thirteenth session) made them 3-17% faster; the
  // tag also retires profiles measured before the graph-cache fix, whose small steps ran eagerly
  tag += ", PDL to " + std::to_string(gpu_runner_options{}.pdl_max_tokens) + " tokens";
  if (gemv_kind() == gemv_impl::simt && gemv_simt_rows() != 2) tag += " rows " + std::to_string(gemv_simt_rows());
  // the prefetch depth changes the mma kernel's step times, so a profile names it
  if (gemv_kind() == gemv_impl::mma) tag += " prefetch " + std::to_string(gemv_mma_prefetch_kblocks());
  // cuBLASLt algorithms chosen by timing (2026-12-07, fourteenth session) change the step times
  // above the GEMV range
  const gemm_tuning t = gemm_tuning::from_env();
  if (t.candidates > 1 && t.max_tokens > k_gemv_max_tokens)
    tag += ", cuBLASLt timed " + std::to_string(t.candidates) + " to " + std::to_string(t.max_tokens) + " rows" +
           (t.variants > 0 ? " with variants of " + std::to_string(t.variants) : "");
  // graphed steps above 128 tokens (DSPARK_GRAPH_MAX_TOKENS, sixteenth session) remove the
  // eager-launch jump from the curve
  const int32_t graphs_to = resolve_graph_max_tokens({});
  if (graphs_to != 128) tag += ", graphs to " + std::to_string(graphs_to) + " tokens";
  return tag;
}

}  // namespace dspark::cuda

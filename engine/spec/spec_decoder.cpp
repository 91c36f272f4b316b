// spec_decoder: prefill, propose, plan, one ragged verify forward, verify, commit, roll back.
#include "engine/spec/spec_decoder.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <string>

#include "common/error.h"
#include "engine/spec/verify.h"

namespace dspark {

namespace {

using clock_type = std::chrono::steady_clock;

double seconds(clock_type::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

double seconds_since(clock_type::time_point t0) {
  return std::chrono::duration<double>(clock_type::now() - t0).count();
}

// Adds the seconds of its scope to `acc`: the drafter's and the prefill's shares of a step, for
// the gate.
struct timed_scope {
  double& acc;
  clock_type::time_point t0 = clock_type::now();
  ~timed_scope() { acc += seconds_since(t0); }
};

}  // namespace

struct spec_decoder::request {
  int32_t id = 0;
  int32_t seq = -1;                 // backend sequence, -1 once freed
  bool prefilled = false;
  int32_t prefill_pos = 0;          // prompt tokens already in the target KV (chunked prefill)
  int32_t kv_valid = 0;             // leading ctx tokens whose K/V the sequence holds, verified
  bool drafter_open = false;        // begin() called, end() not yet
  bool plain = false;               // the gate kept it off the drafter (joined closed, or detached)
  bool drafted = false;             // pipelined: proposed (maybe in flight), not yet verified
  bool done = false;
  bool cancelled = false;
  int32_t prompt_len = 0;
  std::vector<int32_t> ctx;         // prompt + kept tokens; capacity reserved at add()
  sampling_params params;
  std::optional<sampler> smp;
  std::optional<request_output> out;
  spec_metrics metrics;
  uint64_t round = 0;               // verify rounds done; the prefill's draw uses round 0
  clock_type::time_point t_add, t_first;
  // This step:
  int32_t n_proposed = 0;
  int32_t n_verify = 0;
};

struct spec_decoder::step_buffers {
  std::vector<request*> active;            // [max_requests]
  std::vector<propose_request> propose;    // [max_requests]
  std::vector<policy_request> plan;        // [max_requests]
  std::vector<int32_t> n_verify;           // [max_requests]
  std::vector<int32_t> tokens;             // [max_requests * (gamma_max + 1)] forward tokens
  std::vector<batch_sequence> seqs;        // [max_requests]
  std::vector<float> probs;                // [(gamma_max + 1) * n_vocab] target distributions
  std::vector<int32_t> commit;             // [gamma_max + 1] tokens committed this round
  std::vector<request*> single;            // [1] for one-request retries
  std::vector<request*> group_a, group_b;  // [max_requests] pipelined: verified / drafted now
  std::optional<draft_batch> drafts;       // [max_requests][gamma_max]
  std::vector<prefill_piece> pieces;       // [max_requests] this prefill round's chunks
};

spec_decoder::spec_decoder(backend& be, drafter* d, spec_policy& policy, const tokenizer* tok,
                           std::span<const int32_t> stop_ids, const spec_decoder_options& opt)
    : be_(be), drafter_(d), policy_(policy), tok_(tok), stop_ids_(stop_ids), opt_(opt), gate_(opt.gate) {
  gate_.set_step_curve(policy.step_curve());
  const backend_limits& lim = be.limits();
  if (opt.max_requests < 1 || opt.max_requests > lim.n_seq_max)
    throw invalid_argument_error("spec_decoder: max_requests " + std::to_string(opt.max_requests) +
                                 " out of range [1, n_seq_max = " + std::to_string(lim.n_seq_max) + "]");
  const int32_t row_cap = std::min(lim.max_tokens_per_step, lim.max_logit_rows);
  gamma_max_ = d ? policy.draft_budget() : 0;
  if (gamma_max_ + 1 > row_cap)
    throw invalid_argument_error("spec_decoder: draft budget " + std::to_string(gamma_max_) +
                                 " needs " + std::to_string(gamma_max_ + 1) +
                                 " rows per step; the backend allows " + std::to_string(row_cap));
  if (d && static_cast<int32_t>(d->caps().capture_layers.size()) > lim.max_capture_layers)
    throw invalid_argument_error("spec_decoder: the drafter needs " +
                                 std::to_string(d->caps().capture_layers.size()) +
                                 " captured layers; the backend allows " + std::to_string(lim.max_capture_layers));
  prefix_cache_ = opt.prefix_cache && (d == nullptr || d->caps().capture_layers.empty());
  reqs_.resize(static_cast<size_t>(opt.max_requests));
  total_ = spec_metrics(gamma_max_);
  buf_ = std::make_unique<step_buffers>();
  step_buffers& b = *buf_;
  const size_t R = static_cast<size_t>(opt.max_requests), G = static_cast<size_t>(gamma_max_) + 1;
  b.active.reserve(R);
  b.propose.resize(R);
  b.plan.resize(R);
  b.n_verify.resize(R);
  // verify rows, then (fused_prefill) up to a forward's worth of prompt chunks; a prefill
  // forward of its own stages its chunks here too
  b.tokens.resize(R * G + static_cast<size_t>(lim.max_tokens_per_step));
  b.seqs.resize(2 * R);
  b.probs.resize(G * static_cast<size_t>(lim.n_vocab));
  b.commit.resize(G);
  b.single.resize(1);
  b.pieces.reserve(R);
  b.group_a.reserve(R);
  b.group_b.reserve(R);
  draft_batch_params dp;
  dp.max_slots = opt.max_requests;
  dp.gamma_max = std::max(1, gamma_max_);
  dp.n_vocab = lim.n_vocab;
  if (d) {
    dp.kind = d->caps().dist_kind;
    dp.max_sparse = d->caps().max_sparse;
  }
  b.drafts.emplace(dp);
  if (d && !d->caps().has_confidence && gamma_max_ > 0)
    online_.emplace(online_confidence_params{.max_slots = opt.max_requests, .gamma_max = gamma_max_});
  pipeline_ = opt.pipeline && d != nullptr && !d->caps().shares_target && gamma_max_ > 0;
}

spec_decoder::~spec_decoder() {
  if (in_flight_) {
    try {
      drafter_->propose_end();
    } catch (...) {  // the drafter's error has nobody left to report to
    }
  }
  for (auto& r : reqs_)
    if (r && !r->done) {
      if (r->seq >= 0) be_.free_sequence(r->seq);
      if (drafter_ && r->drafter_open) drafter_->end(r->id);
    }
}

spec_decoder::request& spec_decoder::get(int32_t id, const char* who) {
  if (id < 0 || id >= opt_.max_requests || !reqs_[static_cast<size_t>(id)])
    throw invalid_argument_error(std::string(who) + ": no request with id " + std::to_string(id));
  return *reqs_[static_cast<size_t>(id)];
}

int32_t spec_decoder::add(std::span<const int32_t> prompt, const sampling_params& params,
                          token_callback on_token) {
  validate(params);
  const backend_limits& lim = be_.limits();
  if (prompt.empty()) throw invalid_argument_error("spec_decoder: the prompt is empty");
  if (static_cast<int64_t>(prompt.size()) >= lim.n_ctx)
    throw invalid_argument_error("spec_decoder: the prompt has " + std::to_string(prompt.size()) +
                                 " tokens but the context holds " + std::to_string(lim.n_ctx) +
                                 " (at most " + std::to_string(lim.n_ctx - 1) + " prompt tokens)");
  if (!params.stop.empty() && tok_ == nullptr)
    throw invalid_argument_error("spec_decoder: stop strings need a tokenizer");
  for (int32_t t : prompt)
    if (t < 0 || t >= lim.n_vocab)
      throw invalid_argument_error("spec_decoder: prompt token " + std::to_string(t) + " out of range [0, " +
                                   std::to_string(lim.n_vocab) + ")");
  int32_t id = -1;
  for (int32_t i = 0; i < opt_.max_requests && id < 0; ++i)
    if (!reqs_[static_cast<size_t>(i)]) id = i;
  if (id < 0)
    throw invalid_argument_error("spec_decoder: all " + std::to_string(opt_.max_requests) +
                                 " request slots are in use");
  const std::optional<int32_t> seq = be_.open_sequence();
  if (!seq) throw invalid_argument_error("spec_decoder: no free sequence in the backend");
  auto r = std::make_unique<request>();
  r->id = id;
  if (online_) online_->reset(id);
  r->seq = *seq;
  r->prompt_len = static_cast<int32_t>(prompt.size());
  r->params = params;
  r->ctx.reserve(prompt.size() + static_cast<size_t>(params.max_tokens) + 1);
  r->ctx.assign(prompt.begin(), prompt.end());
  r->smp.emplace(lim.n_vocab, params);
  r->out.emplace(tok_, params.ignore_eos ? std::span<const int32_t>{} : stop_ids_, params, lim.n_ctx, r->prompt_len,
                 std::move(on_token));
  r->metrics = spec_metrics(gamma_max_);
  r->t_add = clock_type::now();
  if (prefix_cache_) {
    r->prefill_pos = be_.attach_prefix(r->seq, prompt);  // < prompt_len: the last token is forwarded
    r->kv_valid = r->prefill_pos;
    r->out->result().stats.cached_tokens = r->prefill_pos;
  }
  reqs_[static_cast<size_t>(id)] = std::move(r);
  return id;
}

void spec_decoder::admit(request& r, int32_t joining) {
  if (!drafter_ || r.drafter_open || r.plain) return;
  // Joins while speculation does not pay at the load it joins (the requests decoding and those
  // joining in the same forward before it).
  if (gamma_max_ > 0 && !gate_.open(decoding_count() + joining)) {
    r.plain = true;
    gate_.count_plain_admitted();
    return;
  }
  timed_scope t{step_drafter_s_};
  drafter_->begin(r.id, std::span<const int32_t>(r.ctx.data(), static_cast<size_t>(r.prompt_len)));
  r.drafter_open = true;
}

bool spec_decoder::reads_features(const request& r) const {
  return r.drafter_open && !drafter_->caps().capture_layers.empty();
}

bool spec_decoder::collect_prefill_round(int32_t& budget) {
  step_buffers& b = *buf_;
  const backend_limits& lim = be_.limits();
  const int32_t chunk = std::max(1, std::min(opt_.prefill_chunk, lim.max_tokens_per_step));
  b.pieces.clear();
  int32_t tokens = 0, rows = 0;
  for (auto& rp : reqs_) {
    if (budget <= 0) break;
    if (!rp || rp->done || rp->prefilled) continue;
    request& r = *rp;
    const int32_t n = std::min({r.prompt_len - r.prefill_pos, chunk, budget, lim.max_tokens_per_step - tokens});
    const bool last = r.prefill_pos + n == r.prompt_len;
    if (n < 1 || rows + (last ? 1 : 0) > lim.max_logit_rows) break;
    admit(r, static_cast<int32_t>(b.pieces.size()));
    b.pieces.push_back({&r, r.prefill_pos, n, last});
    budget -= n;
    tokens += n;
    rows += last ? 1 : 0;
    if (!opt_.shared_prefill) break;
  }
  return !b.pieces.empty();
}

void spec_decoder::prefill_pending(int32_t budget) {
  // Rounds of one forward each: every waiting prompt (in slot order) contributes its next chunk
  // while the budget and the backend's per-forward limits last, so the prompts that join in a
  // step share one forward instead of one each (a forward of a few hundred kernels, which on a
  // small target costs more than the tokens in it). With nobody decoding the budget is
  // unlimited and the rounds go on until every prompt is in.
  while (budget > 0 && collect_prefill_round(budget)) prefill_forward(buf_->pieces);
}

size_t spec_decoder::stage_prefill(std::span<const prefill_piece> pieces, int32_t* tokens, batch_sequence* seqs,
                                   bool& capture, bool& all_greedy) const {
  size_t n_tok = 0;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const prefill_piece& p = pieces[i];
    const request& r = *p.r;
    std::copy_n(r.ctx.begin() + p.pos, p.n, tokens + n_tok);
    n_tok += static_cast<size_t>(p.n);
    seqs[i] = batch_sequence{r.seq, p.n, p.last ? 1 : 0};
    // A drafter that reads target features gets every prompt row's.
    if (reads_features(r)) {
      seqs[i].n_capture = p.n;
      capture = true;
    }
    all_greedy = all_greedy && (!p.last || r.smp->greedy());
  }
  return n_tok;
}

target_features spec_decoder::features_of(const forward_output& o, int32_t n_layers, int32_t n_rows,
                                          int64_t row0) const {
  target_features f;
  if (o.hidden == nullptr && o.hidden_device == nullptr) return f;
  const int64_t n_embd = be_.limits().n_embd;
  f.data = o.hidden;
  f.n_layers = n_layers;
  f.n_rows = n_rows;
  f.row0 = row0;
  f.n_embd = n_embd;
  f.layer_stride = o.n_hidden_rows * n_embd;
  if (drafter_->caps().reads_device_features) {
    f.device = o.hidden_device;
    f.device_layer_stride = o.hidden_device_layer_stride;
    f.device_stream = o.hidden_stream;
  }
  return f;
}

forward_output spec_decoder::target_forward(forward_batch& fb) {
  if (drafter_) {
    // The drafter's deferred reads of the last forward's device features go first.
    fb.hidden_on_device = !fb.capture_layers.empty() && drafter_->caps().reads_device_features;
    drafter_->before_target_forward();
  }
  return be_.forward(fb);
}

void spec_decoder::land_prefill(std::span<const prefill_piece> pieces, const batch_sequence* seqs,
                                const forward_output& o, int64_t row, int64_t hidden_row, size_t n_layers) {
  const backend_limits& lim = be_.limits();
  for (size_t i = 0; i < pieces.size(); ++i) {
    const prefill_piece& p = pieces[i];
    request& r = *p.r;
    r.prefill_pos = p.pos + p.n;
    r.kv_valid = r.prefill_pos;
    if (prefix_cache_) be_.cache_prefix(r.seq, {r.ctx.data(), static_cast<size_t>(r.prefill_pos)});
    if (o.hidden || o.hidden_device) {
      if (reads_features(r)) {
        // One on_commit per chunk (no tokens; features_pos0 = the chunk's first position),
        // before the one committing x0.
        commit_info c;
        c.features_pos0 = p.pos;
        c.features = features_of(o, static_cast<int32_t>(n_layers), p.n, hidden_row);
        timed_scope t{step_drafter_s_};
        drafter_->on_commit(r.id, c);
      }
      hidden_row += seqs[i].capture_count();
    }
    if (p.last) {
      const float* logits = o.logits ? o.logits + row * lim.n_vocab : nullptr;
      first_token(r, logits, o.argmax ? o.argmax[row] : -1);
      ++row;
    }
  }
}

void spec_decoder::prefill_forward(std::span<const prefill_piece> pieces) {
  step_buffers& b = *buf_;
  bool capture = false, all_greedy = true;
  // b.tokens is free here: a fused forward that falls back to this one restages its verify rows
  const size_t n_tok = stage_prefill(pieces, b.tokens.data(), b.seqs.data(), capture, all_greedy);
  forward_batch fb;
  fb.tokens = {b.tokens.data(), n_tok};
  fb.seqs = {b.seqs.data(), pieces.size()};
  // Greedy first tokens come back as argmax ids; a sampled one needs its logit row.
  fb.outputs = all_greedy ? row_outputs::argmax : row_outputs::logits_and_argmax;
  if (capture) fb.capture_layers = drafter_->caps().capture_layers;
  const forward_output o = target_forward(fb);
  if (o.status != forward_status::ok) {
    // No state changed. Several prompts: one at a time; one that does not fit alone ends.
    if (pieces.size() > 1) {
      for (const prefill_piece& p : pieces) {
        if (p.r->done) continue;
        const prefill_piece one = p;
        prefill_forward({&one, 1});
      }
      return;
    }
    pieces[0].r->out->result().finish = finish_reason::context_full;
    finish(*pieces[0].r);
    return;
  }
  land_prefill(pieces, b.seqs.data(), o, 0, 0, fb.capture_layers.size());
}

void spec_decoder::first_token(request& r, const float* logits, int32_t argmax) {
  r.prefilled = true;
  // x0: the backend's argmax id, or a draw from the filtered distribution keyed by (seed,
  // round 0, position).
  int32_t x0 = argmax;
  if (!r.smp->greedy()) {
    r.smp->distribution(logits, buf_->probs.data());
    const rng_key key{r.params.seed, 0};
    x0 = sample_index({buf_->probs.data(), static_cast<size_t>(be_.limits().n_vocab)},
                      key.uniform(static_cast<uint64_t>(r.prompt_len), rng_purpose::sample));
  }
  r.t_first = clock_type::now();
  r.out->result().stats.prefill_s = std::chrono::duration<double>(r.t_first - r.t_add).count();
  const bool go_on = r.out->push(x0);
  if (!go_on) {
    finish(r);
    return;
  }
  r.ctx.push_back(x0);
  if (r.drafter_open) {
    commit_info c;
    c.tokens = std::span<const int32_t>(&r.ctx.back(), 1);
    timed_scope t{step_drafter_s_};
    drafter_->on_commit(r.id, c);
  }
}

int32_t spec_decoder::step() {
  step_buffers& b = *buf_;
  const auto t_step = clock_type::now();
  // The gate alone reads the backend's launch counters (a one-off stall keeps a step out of
  // its windows); without it the step does not touch them.
  const bool gated = drafter_ && gamma_max_ > 0 && gate_.params().mode != spec_gate_mode::off;
  const graph_launch_stats launches_before = gated ? be_.graph_stats() : graph_launch_stats{};
  step_drafter_s_ = 0.0;
  step_accepted_ = 0;
  // Chunked prefill: while other requests decode, a step carries at most one prefill chunk of
  // prompt tokens (in arrival order of the slots), so a long prompt that joins delays their next
  // token by one chunk's forward per step, not by its whole prefill. With nobody decoding,
  // prompts are prefilled whole (nothing to protect; the first token comes sooner).
  int32_t budget = decoding_count() > 0 ? std::max(1, opt_.prefill_chunk) : std::numeric_limits<int32_t>::max();
  step_prefill_s_ = 0.0;
  fuse_pending_ = false;
  if (opt_.fused_prefill && decoding_count() > 0) {
    // One round of chunks, left in b.pieces for the verify forward to carry (run_forward).
    fuse_pending_ = collect_prefill_round(budget);
  } else {
    timed_scope t{step_prefill_s_};
    prefill_pending(budget);
  }
  b.active.clear();
  for (auto& r : reqs_)
    if (r && !r->done && r->prefilled) b.active.push_back(r.get());
  int32_t drafting = 0;
  for (const request* r : b.active) drafting += r->drafter_open ? 1 : 0;
  if (!b.active.empty()) {
    if (pipeline_) {
      pipelined_round(b.active);
    } else {
      verify_round(b.active);
      ++pstats_.sync_rounds;
    }
  }
  if (fuse_pending_) {  // no verify forward had room for the chunks: they go on their own
    fuse_pending_ = false;
    timed_scope t{step_prefill_s_};
    prefill_forward(b.pieces);
  }
  if (gated) apply_gate(static_cast<int32_t>(b.active.size()), drafting, t_step, launches_before);
  int32_t n = 0;
  for (auto& r : reqs_) n += (r && !r->done) ? 1 : 0;
  return n;
}

int32_t spec_decoder::decoding_count() const {
  int32_t n = 0;
  for (const auto& r : reqs_) n += (r && !r->done && r->prefilled) ? 1 : 0;
  return n;
}

void spec_decoder::apply_gate(int32_t decoded, int32_t drafting, clock_type::time_point t_step,
                              const graph_launch_stats& at_step_start) {
  spec_gate_step g;
  g.decoding = decoded;
  g.drafting = drafting;
  g.accepted = step_accepted_;
  g.drafter_s = step_drafter_s_;
  g.step_s = seconds_since(t_step);
  g.prefill_s = step_prefill_s_;
  g.policy_warm = policy_.warmed_up();
  const graph_launch_stats now = be_.graph_stats();
  // Graph captures are not flagged: with ragged verify shapes they go on all level long, and
  // a capture costs about an eager step; timing a cuBLASLt algorithm stalls 10-50 ms, once.
  g.one_off = now.gemm_shapes_timed > at_step_start.gemm_shapes_timed;
  gate_.observe(g);
  if (gate_.open(decoding_count())) return;
  int32_t n = 0;
  for (auto& r : reqs_)
    if (r && !r->done && r->drafter_open) {
      detach(*r);
      ++n;
    }
  gate_.count_detached(n);
}

void spec_decoder::detach(request& r) {
  if (r.drafted) {  // pipelined: its drafts may be in flight; they stay in the batch and verify
    end_propose();
    r.drafted = false;
  }
  {
    timed_scope t{step_drafter_s_};
    drafter_->end(r.id);
  }
  r.drafter_open = false;
  r.plain = true;
}

void spec_decoder::run() {
  while (step() > 0) {
  }
}

void spec_decoder::verify_round(std::span<request*> reqs) {
  propose_group(reqs, false);
  plan_and_verify(reqs);
}

void spec_decoder::propose_group(std::span<request*> reqs, bool async) {
  step_buffers& b = *buf_;
  draft_batch& drafts = *b.drafts;
  const int32_t n_ctx = be_.limits().n_ctx;
  // The budget is capped so a round cannot commit past max_tokens or the context.
  size_t n_prop = 0;
  for (request* r : reqs) {
    drafts.clear(r->id);
    const int32_t room = std::min(r->out->remaining() - 1, n_ctx - static_cast<int32_t>(r->ctx.size()));
    const int32_t budget = std::max(0, std::min(gamma_max_, room));
    r->n_verify = budget;  // the cap the policy sees
    r->drafted = async;
    if (r->drafter_open && budget > 0)
      b.propose[n_prop++] =
          propose_request{r->id, budget, r->ctx, rng_key{r->params.seed, r->round + 1}, &r->params, r->seq};
  }
  if (!drafter_ || n_prop == 0) return;
  if (async) {
    drafter_->propose_begin({b.propose.data(), n_prop}, drafts);
    in_flight_ = true;
  } else {
    const auto t0 = clock_type::now();
    drafter_->propose({b.propose.data(), n_prop}, drafts);
    const double dt = seconds_since(t0);
    pstats_.propose_wait_s += dt;
    step_drafter_s_ += dt;
  }
}

void spec_decoder::end_propose() {
  if (!in_flight_) return;
  in_flight_ = false;
  const auto t0 = clock_type::now();
  drafter_->propose_end();
  const double dt = seconds_since(t0);
  pstats_.propose_wait_s += dt;
  step_drafter_s_ += dt;
}

void spec_decoder::pipelined_round(std::span<request*> active) {
  step_buffers& b = *buf_;
  // A: drafted in the previous step (their propose may still be in flight); B: everyone else.
  b.group_a.clear();
  b.group_b.clear();
  for (request* r : active) (r->drafted ? b.group_a : b.group_b).push_back(r);
  if (b.group_a.empty()) {
    if (b.group_b.size() < 2) {  // a single request: nothing to overlap, synchronous order
      verify_round(b.group_b);
      ++pstats_.sync_rounds;
      return;
    }
    // Start-up (or the drafted group all finished): draft the first half now, the rest in flight.
    const size_t half = b.group_b.size() / 2;
    for (size_t i = 0; i < half; ++i) b.group_a.push_back(b.group_b[i]);
    b.group_b.erase(b.group_b.begin(), b.group_b.begin() + static_cast<std::ptrdiff_t>(half));
    propose_group(b.group_a, false);
  }
  end_propose();
  for (request* r : b.group_a) r->drafted = false;
  if (!b.group_b.empty()) propose_group(b.group_b, true);
  plan_and_verify(b.group_a);
  ++(b.group_b.empty() ? pstats_.sync_rounds : pstats_.overlapped_rounds);
}

void spec_decoder::plan_and_verify(std::span<request*> reqs) {
  step_buffers& b = *buf_;
  draft_batch& drafts = *b.drafts;
  const auto t0 = clock_type::now();
  if (online_)
    for (request* r : reqs) online_->fill(r->id, drafts.mutable_confidences(r->id));
  // Plan: the policy sees every request's proposal at once.
  for (size_t i = 0; i < reqs.size(); ++i) {
    request* r = reqs[i];
    r->n_proposed = drafts.length(r->id);
    b.plan[i] = policy_request{r->id, drafts.confidences(r->id), r->n_verify};
  }
  // Prompt chunks waiting to ride in this round's first forward (fused_prefill) are paid for
  // whatever the plan: the policy prices the drafts on top of them.
  int64_t p_tok = 0, p_rows = 0;
  if (fuse_pending_)
    for (const prefill_piece& p : b.pieces) {
      p_tok += p.n;
      p_rows += p.last ? 1 : 0;
    }
  policy_.set_carried_rows(p_tok);
  policy_.plan({b.plan.data(), reqs.size()}, {b.n_verify.data(), reqs.size()});
  for (size_t i = 0; i < reqs.size(); ++i) {
    request* r = reqs[i];
    r->n_verify = std::max(0, std::min({b.n_verify[i], r->n_proposed, r->n_verify}));
    drafts.truncate(r->id, r->n_verify);
  }
  // Forward in as few ragged batches as the backend's per-step limits allow (usually one).
  const backend_limits& lim = be_.limits();
  size_t begin = 0;
  while (begin < reqs.size()) {
    size_t end = begin;
    int64_t tokens = 0;
    while (end < reqs.size() && tokens + reqs[end]->n_verify + 1 <= std::min(lim.max_tokens_per_step, lim.max_logit_rows)) {
      tokens += reqs[end]->n_verify + 1;
      ++end;
    }
    // The step's prefill chunks (fused_prefill) ride in the first forward that has room for them.
    std::span<const prefill_piece> pieces;
    if (fuse_pending_ && tokens + p_tok <= lim.max_tokens_per_step && tokens + p_rows <= lim.max_logit_rows) {
      pieces = b.pieces;
      fuse_pending_ = false;
    }
    run_forward(reqs.subspan(begin, end - begin), pieces);
    begin = end;
  }
  pstats_.verify_s += std::chrono::duration<double>(clock_type::now() - t0).count();
}

void spec_decoder::run_forward(std::span<request*> reqs, std::span<const prefill_piece> pieces) {
  step_buffers& b = *buf_;
  draft_batch& drafts = *b.drafts;
  size_t n_tok = 0;
  bool all_greedy = true;
  for (size_t i = 0; i < reqs.size(); ++i) {
    request* r = reqs[i];
    b.tokens[n_tok++] = r->ctx.back();  // x0
    for (int32_t t : drafts.tokens(r->id)) b.tokens[n_tok++] = t;
    b.seqs[i] = batch_sequence{r->seq, r->n_verify + 1, r->n_verify + 1};
    all_greedy = all_greedy && r->smp->greedy();
  }
  // Features while any request of the forward still drafts (once the gate detached them all,
  // the forward is plain decoding's) or a prompt chunk in it feeds a feature-reading drafter.
  bool capture = false;
  for (const request* r : reqs) capture = capture || r->drafter_open;
  // Fused prefill chunks follow the verify rows, so every verify row's logit and hidden row
  // indices are the ones an unfused forward gives.
  const size_t verify_tok = n_tok;
  if (!pieces.empty())
    n_tok += stage_prefill(pieces, b.tokens.data() + n_tok, b.seqs.data() + reqs.size(), capture, all_greedy);
  forward_batch fb;
  fb.tokens = {b.tokens.data(), n_tok};
  // An all-greedy batch verifies from the backend's argmax ids (no logit rows copied back); one
  // sampled request needs the logits of every row (and a greedy prompt's first token its id).
  fb.outputs = all_greedy ? row_outputs::argmax : (pieces.empty() ? row_outputs::logits : row_outputs::logits_and_argmax);
  fb.seqs = {b.seqs.data(), reqs.size() + pieces.size()};
  if (capture) fb.capture_layers = drafter_->caps().capture_layers;
  const forward_output out = target_forward(fb);
  if (out.status == forward_status::out_of_kv && !pieces.empty()) {
    // No state changed: the chunks on their own (with their own fallback), then the verify rows.
    {
      timed_scope t{step_prefill_s_};
      prefill_forward(pieces);
    }
    run_forward(reqs, {});
    return;
  }
  if (out.status == forward_status::out_of_kv) {
    // No state changed. Retry one request at a time, then without drafts; a request that cannot
    // fit even x0 ends as context_full.
    if (reqs.size() > 1) {
      for (request* r : reqs) {
        b.single[0] = r;
        run_forward(b.single);
      }
    } else if (reqs[0]->n_verify > 0) {
      reqs[0]->n_verify = 0;
      drafts.truncate(reqs[0]->id, 0);
      run_forward(reqs);
    } else {
      reqs[0]->out->result().finish = finish_reason::context_full;
      finish(*reqs[0]);
    }
    return;
  }
  int64_t row0 = 0;
  for (request* r : reqs) {
    commit_round(*r, out, row0);
    row0 += r->n_verify + 1;
  }
  if (pieces.empty()) return;
  // The gate leaves prefill out of a step's cost: the chunks' share of this forward, from the
  // step curve when the policy has one.
  if (const sps_table* curve = policy_.step_curve())
    step_prefill_s_ += std::max(0.0, 1.0 / curve->at(static_cast<int64_t>(reqs.size() + pieces.size()),
                                                     static_cast<int64_t>(n_tok)) -
                                         1.0 / curve->at(static_cast<int64_t>(reqs.size()),
                                                         static_cast<int64_t>(verify_tok)));
  // verify rows capture their logit rows, so the chunks' hidden rows start where their logits do
  land_prefill(pieces, b.seqs.data() + reqs.size(), out, row0, row0, fb.capture_layers.size());
}

void spec_decoder::commit_round(request& r, const forward_output& out, int64_t row0) {
  step_buffers& b = *buf_;
  draft_batch& drafts = *b.drafts;
  const int64_t nv = be_.limits().n_vocab;
  const float* rows = out.logits ? out.logits + row0 * nv : nullptr;  // null: argmax ids only
  const int32_t l = r.n_verify;
  ++r.round;
  verify_result v;
  if (r.smp->greedy() && out.argmax) {
    v = verify_greedy(drafts.tokens(r.id), {out.argmax + row0, static_cast<size_t>(l) + 1});
  } else if (r.smp->greedy()) {
    v = verify_greedy(drafts.tokens(r.id), rows, nv);
  } else {
    for (int32_t k = 0; k <= l; ++k) r.smp->distribution(rows + k * nv, b.probs.data() + k * nv);
    v = verify_rejection(drafts, r.id, b.probs.data(), nv, rng_key{r.params.seed, r.round},
                         static_cast<int64_t>(r.ctx.size()));
  }
  // Commit x_1..x_a then y through the generator's stop rules; the first stop drops the rest.
  const std::span<const int32_t> d = drafts.tokens(r.id);
  const size_t ctx_before = r.ctx.size();
  int32_t n_commit = 0;
  bool go_on = true;
  int32_t accepted_counted = v.n_accepted;
  bool emitted_next = true;
  for (int32_t k = 0; k <= v.n_accepted && go_on; ++k) {
    const int32_t t = k < v.n_accepted ? d[static_cast<size_t>(k)] : v.token;
    const size_t kept_before = r.out->result().token_ids.size();
    go_on = r.out->push(t);
    if (r.out->result().token_ids.size() > kept_before) {
      r.ctx.push_back(t);
      b.commit[static_cast<size_t>(n_commit++)] = t;
    }
    if (!go_on && k < v.n_accepted && r.out->result().finish == finish_reason::stop_id) {
      accepted_counted = k + 1;  // an accepted stop token ends the round with no bonus
      emitted_next = false;
    }
  }
  r.metrics.record_round(r.n_proposed, l, accepted_counted, emitted_next);
  step_accepted_ += accepted_counted;
  if (online_) online_->observe(r.id, l, v.n_accepted);
  if (drafter_ && drafter_->caps().has_confidence && l > 0)
    r.metrics.record_confidences(b.drafts->confidences(r.id), l, v.n_accepted);
  if (!go_on) {
    finish(r);
    return;
  }
  // The KV keeps x0 and the accepted drafts; y (= ctx.back()) is the next round's x0.
  be_.truncate(r.seq, static_cast<int32_t>(ctx_before) + v.n_accepted);
  r.kv_valid = static_cast<int32_t>(ctx_before) + v.n_accepted;
  if (r.drafter_open) {
    commit_info c;
    c.tokens = {b.commit.data(), static_cast<size_t>(n_commit)};
    c.n_accepted = v.n_accepted;
    c.n_proposed = l;
    c.features_pos0 = static_cast<int32_t>(ctx_before) - 1;  // x0's position
    // Captured when this forward had a drafting request (r among them).
    c.features = features_of(out, static_cast<int32_t>(drafter_->caps().capture_layers.size()), v.n_accepted + 1, row0);
    timed_scope t{step_drafter_s_};
    drafter_->on_commit(r.id, c);
  }
}

void spec_decoder::finish(request& r) {
  if (r.done) return;
  r.done = true;
  if (r.seq >= 0) {
    // Publish the verified K/V (prompt and generated) for requests that repeat this one.
    if (prefix_cache_ && r.kv_valid > 0) be_.cache_prefix(r.seq, {r.ctx.data(), static_cast<size_t>(r.kv_valid)});
    be_.free_sequence(r.seq);
    r.seq = -1;
  }
  if (r.drafted) {  // its drafts may be in flight: the drafter must be done with it first
    end_propose();
    r.drafted = false;
  }
  if (r.drafter_open) {
    timed_scope t{step_drafter_s_};
    drafter_->end(r.id);
  }
  r.drafter_open = false;
  r.out->close();
  const auto t_end = clock_type::now();
  generation_stats& s = r.out->result().stats;
  const bool has_first = r.prefilled && s.generated_tokens > 0;
  s.ttft_s = has_first ? std::chrono::duration<double>(r.t_first - r.t_add).count() : 0.0;
  s.decode_s = has_first ? std::chrono::duration<double>(t_end - r.t_first).count() : 0.0;
  s.prefill_tok_s = s.prefill_s > 0 ? s.prompt_tokens / s.prefill_s : 0;
  s.decode_tok_s = s.decode_s > 0 && s.generated_tokens > 1 ? (s.generated_tokens - 1) / s.decode_s : 0;
  request_timing t;
  t.t_start = seconds(r.t_add);
  t.t_first_token = has_first ? seconds(r.t_first) : seconds(t_end);
  t.t_end = seconds(t_end);
  t.prompt_tokens = r.prompt_len;
  t.generated_tokens = s.generated_tokens;
  r.metrics.record_request(t);
}

bool spec_decoder::finished(int32_t id) const {
  if (id < 0 || id >= opt_.max_requests || !reqs_[static_cast<size_t>(id)])
    throw invalid_argument_error("spec_decoder: no request with id " + std::to_string(id));
  return reqs_[static_cast<size_t>(id)]->done;
}

void spec_decoder::cancel(int32_t id) {
  request& r = get(id, "spec_decoder::cancel");
  if (r.done) return;
  r.cancelled = true;
  finish(r);
}

spec_result spec_decoder::take(int32_t id) {
  request& r = get(id, "spec_decoder::take");
  if (!r.done)
    throw invalid_argument_error("spec_decoder::take: request " + std::to_string(id) + " is still running");
  spec_result res;
  res.gen = std::move(r.out->result());
  res.metrics = std::move(r.metrics);
  res.cancelled = r.cancelled;
  total_.merge(res.metrics);
  reqs_[static_cast<size_t>(id)].reset();
  return res;
}

spec_result spec_generate(backend& be, drafter* d, spec_policy& policy, const tokenizer* tok,
                          std::span<const int32_t> stop_ids, std::span<const int32_t> prompt,
                          const sampling_params& params, const token_callback& on_token) {
  spec_decoder dec(be, d, policy, tok, stop_ids);
  const int32_t id = dec.add(prompt, params, on_token);
  dec.run();
  return dec.take(id);
}

std::vector<spec_result> spec_generate_all(spec_decoder& dec, std::span<const std::vector<int32_t>> prompts,
                                           const sampling_params& params, bool per_prompt_seed) {
  const int32_t slots = dec.max_requests();
  std::vector<spec_result> out(prompts.size());
  std::vector<int64_t> owner(static_cast<size_t>(slots), -1);  // request id -> prompt index
  size_t next = 0, done = 0;
  while (done < prompts.size()) {
    for (int32_t id = 0; id < slots && next < prompts.size(); ++id) {
      if (owner[static_cast<size_t>(id)] >= 0) continue;
      sampling_params p = params;
      if (per_prompt_seed) p.seed = params.seed + next;
      owner[static_cast<size_t>(dec.add(prompts[next], p))] = static_cast<int64_t>(next);
      ++next;
    }
    dec.step();
    for (int32_t id = 0; id < slots; ++id) {
      const int64_t i = owner[static_cast<size_t>(id)];
      if (i < 0 || !dec.finished(id)) continue;
      out[static_cast<size_t>(i)] = dec.take(id);
      owner[static_cast<size_t>(id)] = -1;
      ++done;
    }
  }
  return out;
}

}  // namespace dspark

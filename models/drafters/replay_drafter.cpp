// replay_drafter: replays a round trace's acceptance against an oracle (see replay_drafter.h).
#include "models/drafters/replay_drafter.h"

#include <algorithm>
#include <sstream>

#include "common/error.h"
#include "engine/spec/counter_rng.h"
#include "engine/spec/policy.h"
#include "engine/spec/spec_decoder.h"
#include "models/drafters/drafter_compute.h"

namespace dspark {

namespace {

uint64_t prompt_hash(std::span<const int32_t> p) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ p.size();
  for (int32_t t : p) h = splitmix64_mix(h ^ static_cast<uint32_t>(t));
  return h;
}

// The whole number after the '=' of a "name=V" spec part, in [0, hi]; `form` ("layers=N")
// names it in the error.
int option_value(const std::string& part, const std::string& form, int hi) {
  const std::string v = part.substr(part.find('=') + 1);
  size_t used = 0;
  int n = -1;
  try {
    n = std::stoi(v, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  if (used != v.size() || v.empty() || n < 0 || n > hi)
    throw invalid_argument_error("replay: " + form + " needs " + form.substr(form.find('=') + 1) + " in [0, " +
                                 std::to_string(hi) + "], got '" + v + "'");
  return n;
}

}  // namespace

std::vector<replay_oracle> compute_replay_oracles(backend& be, std::span<const std::vector<int32_t>> prompts,
                                                  const sampling_params& params, const tokenizer* tok,
                                                  std::span<const int32_t> stop_ids, int32_t batch) {
  if (params.temperature != 0.0f)
    throw invalid_argument_error("compute_replay_oracles: the oracle is greedy decoding (temperature 0)");
  fixed_gamma_policy plain(0);
  spec_decoder dec(be, nullptr, plain, tok, stop_ids, {.max_requests = std::max(1, batch)});
  const std::vector<spec_result> res = spec_generate_all(dec, prompts, params, /*per_prompt_seed=*/false);
  std::vector<replay_oracle> out(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    out[i].prompt = prompts[i];
    out[i].continuation = res[i].gen.token_ids;
  }
  return out;
}

replay_spec parse_replay_spec(const std::string& spec) {
  const std::string form = "replay:TRACE.jsonl[,layers=N][,logits=all|last][,features=F][,features_on=host|device]";
  if (spec.rfind("replay:", 0) != 0) throw invalid_argument_error("draft must be " + form + ", got '" + spec + "'");
  replay_spec r;
  std::stringstream ss(spec.substr(7));
  std::string part;
  bool first = true;
  while (std::getline(ss, part, ',')) {
    if (first) {
      r.trace_path = part;
      first = false;
    } else if (part.rfind("layers=", 0) == 0) {
      r.n_layers = option_value(part, "layers=N", 1024);
    } else if (part.rfind("features=", 0) == 0) {
      r.feature_layers = option_value(part, "features=F", 8);
    } else if (part == "features_on=host" || part == "features_on=device") {
      r.device_features = part == "features_on=device";
    } else if (part == "logits=all" || part == "logits=last") {
      r.all_logits = part == "logits=all";
    } else {
      throw invalid_argument_error("replay: unknown option '" + part + "' (form: " + form + ")");
    }
  }
  if (r.trace_path.empty()) throw invalid_argument_error("replay: no trace file (form: " + form + ")");
  return r;
}

std::vector<int32_t> spread_capture_layers(int32_t n_layer, int32_t count) {
  if (count < 1 || count > n_layer - 2)
    throw invalid_argument_error("spread_capture_layers: " + std::to_string(count) + " layers of a " +
                                 std::to_string(n_layer) + "-layer target (at most n_layer - 2)");
  if (count == 1) return {n_layer / 2};
  std::vector<int32_t> out;
  for (int32_t i = 0; i < count; ++i) out.push_back(1 + (i * (n_layer - 3) + (count - 1) / 2) / (count - 1));
  return out;
}

replay_drafter::replay_drafter(round_trace trace, std::vector<replay_oracle> oracles, int64_t n_vocab,
                               const replay_drafter_params& p)
    : trace_(std::move(trace)), oracles_(std::move(oracles)), n_vocab_(n_vocab), p_(p) {
  for (size_t i = 0; i < trace_.requests.size(); ++i)
    if (!trace_.requests[i].rounds.empty()) records_.push_back(i);
  if (records_.empty()) throw invalid_argument_error("replay_drafter: the trace has no rounds");
  if (p.max_slots < 1 || n_vocab < 2) throw invalid_argument_error("replay_drafter: max_slots >= 1 and n_vocab >= 2 needed");
  if (p.n_layers < 0) throw invalid_argument_error("replay_drafter: n_layers must be >= 0");
  if (p.n_layers > 0) {
    if (!p.target || !p.target->supports_forward_prefix())
      throw invalid_argument_error("replay_drafter: charging the draft pass needs a target backend with forward_prefix");
    const backend_limits& lim = p.target->limits();
    tok_buf_.resize(static_cast<size_t>(lim.max_tokens_per_step));
    seqs_.resize(static_cast<size_t>(p.max_slots));
    restore_.reserve(static_cast<size_t>(p.max_slots));
  }
  for (size_t i = 0; i < oracles_.size(); ++i) by_prompt_.emplace(prompt_hash(oracles_[i].prompt), i);
  caps_.name = "replay(" + trace_.header.drafter + ")";
  caps_.dist_kind = draft_dist_kind::one_hot;
  caps_.has_confidence = trace_.header.has_confidence;
  if (!p.capture_layers.empty()) {
    if (p.n_embd < 1) throw invalid_argument_error("replay_drafter: capture layers need the target's n_embd");
    caps_.capture_layers = p.capture_layers;
    caps_.reads_device_features = p.device_features;
    staging_.resize(static_cast<size_t>(k_staging_rows * p.n_embd) * p.capture_layers.size());
  }
  slots_.resize(static_cast<size_t>(p.max_slots));
}

replay_drafter::slot_state& replay_drafter::open_slot(int32_t slot, const char* who) {
  if (slot < 0 || slot >= p_.max_slots || !slots_[static_cast<size_t>(slot)].open)
    throw invalid_argument_error(std::string("replay_drafter::") + who + ": slot " + std::to_string(slot) +
                                 " is not open");
  return slots_[static_cast<size_t>(slot)];
}

void replay_drafter::restart_assignment() {
  for (const slot_state& s : slots_)
    if (s.open) throw invalid_argument_error("replay_drafter: restart_assignment with a request open");
  begun_ = 0;
}

void replay_drafter::begin(int32_t slot, std::span<const int32_t> prompt) {
  if (slot < 0 || slot >= p_.max_slots)
    throw invalid_argument_error("replay_drafter: slot " + std::to_string(slot) + " out of range");
  const replay_oracle* found = nullptr;
  const auto [lo, hi] = by_prompt_.equal_range(prompt_hash(prompt));
  for (auto it = lo; it != hi && !found; ++it) {
    const std::vector<int32_t>& q = oracles_[it->second].prompt;
    if (std::equal(q.begin(), q.end(), prompt.begin(), prompt.end())) found = &oracles_[it->second];
  }
  if (!found) throw invalid_argument_error("replay_drafter: no oracle for a prompt of " + std::to_string(prompt.size()) + " tokens");
  slot_state& s = slots_[static_cast<size_t>(slot)];
  s = slot_state{};
  s.open = true;
  s.oracle = found;
  s.prompt_len = static_cast<int32_t>(prompt.size());
  s.record = static_cast<size_t>(begun_++) % records_.size();
}

const trace_round& replay_drafter::next_round(slot_state& s) {
  if (s.round >= trace_.requests[records_[s.record]].rounds.size()) {
    s.record = (s.record + 1) % records_.size();
    s.round = 0;
  }
  return trace_.requests[records_[s.record]].rounds[s.round++];
}

void replay_drafter::propose(std::span<const propose_request> batch, draft_batch& out) {
  for (const propose_request& r : batch) {
    slot_state& s = open_slot(r.slot, "propose");
    if (s.diverged) continue;  // off the oracle: plain decoding from here on
    const trace_round& t = next_round(s);
    ++rounds_replayed_;
    const std::vector<int32_t>& cont = s.oracle->continuation;
    const int64_t base = static_cast<int64_t>(r.context.size()) - s.prompt_len;  // oracle index of x_1
    const int64_t avail = std::max<int64_t>(0, static_cast<int64_t>(cont.size()) - base);
    const int64_t g = std::min<int64_t>({r.max_drafts, out.params().gamma_max - out.length(r.slot),
                                         static_cast<int64_t>(t.confidence.size()), avail});
    for (int64_t k = 0; k < g; ++k) {
      const int32_t truth = cont[static_cast<size_t>(base + k)];
      const int32_t x = k < t.accepted ? truth : static_cast<int32_t>((truth + 1) % n_vocab_);
      out.push_one_hot(r.slot, x, t.confidence[static_cast<size_t>(k)]);
    }
  }
  if (p_.n_layers > 0) charge(batch, out);
}

// The draft pass a real drafter of this size would run: n_layers target layers over each
// proposing request's g rows on its own KV, then back to the committed length.
void replay_drafter::charge(std::span<const propose_request> batch, const draft_batch& out) {
  backend& be = *p_.target;
  const backend_limits& lim = be.limits();
  restore_.clear();
  size_t i = 0;
  while (i < batch.size()) {
    int32_t n_tok = 0, n_rows = 0;
    size_t n_seq = 0;
    for (; i < batch.size(); ++i) {
      const propose_request& r = batch[i];
      const int32_t g = out.length(r.slot);
      if (g == 0) continue;
      const int32_t rows = p_.all_logits ? g : 1;
      if (n_seq > 0 && (n_tok + g > lim.max_tokens_per_step || n_rows + rows > lim.max_logit_rows)) break;
      if (r.target_seq < 0) throw invalid_argument_error("replay_drafter: the draft pass needs the target sequence");
      restore_.emplace_back(r.target_seq, be.sequence_length(r.target_seq));
      tok_buf_[static_cast<size_t>(n_tok)] = r.context.back();  // x0, then x_1..x_{g-1}
      const std::span<const int32_t> d = out.tokens(r.slot);
      std::copy(d.begin(), d.begin() + (g - 1), tok_buf_.begin() + n_tok + 1);
      seqs_[n_seq++] = batch_sequence{r.target_seq, g, rows};
      n_tok += g;
      n_rows += rows;
    }
    if (n_seq == 0) break;
    forward_batch fb;
    fb.tokens = {tok_buf_.data(), static_cast<size_t>(n_tok)};
    fb.seqs = {seqs_.data(), n_seq};
    if (be.forward_prefix(fb, p_.n_layers).status != forward_status::ok)
      throw invalid_argument_error("replay_drafter: the target KV cache has no room for the draft pass");
  }
  for (const auto& [seq, len] : restore_) be.truncate(seq, len);
}

void replay_drafter::on_commit(int32_t slot, const commit_info& c) {
  slot_state& s = open_slot(slot, "on_commit");
  const target_features& f = c.features;
  if (!staging_.empty() && f.data == nullptr && f.device != nullptr) {
    // Device rows: a GPU drafter gathers them with one kernel per forward (feature_staging.h),
    // a few microseconds this replay does not charge; it only counts them.
    feature_rows_ += f.n_rows;
  } else if (!staging_.empty() && f.data != nullptr) {
    if (f.n_layers != static_cast<int32_t>(caps_.capture_layers.size()) || f.n_embd != p_.n_embd)
      throw invalid_argument_error("replay_drafter::on_commit: features of " + std::to_string(f.n_layers) + " x " +
                                   std::to_string(f.n_embd) + ", expected " +
                                   std::to_string(caps_.capture_layers.size()) + " x " + std::to_string(p_.n_embd));
    const int64_t width = static_cast<int64_t>(f.n_layers) * f.n_embd;
    for (int32_t i = 0; i < f.n_rows; ++i)
      gather_feature_row(f, i, staging_.data() + (feature_rows_++ % k_staging_rows) * width);
  }
  const std::vector<int32_t>& cont = s.oracle->continuation;
  for (int32_t t : c.tokens) {
    const size_t at = static_cast<size_t>(s.generated++);
    if (!s.diverged && (at >= cont.size() || cont[at] != t)) {
      s.diverged = true;
      ++misses_;
    }
  }
}

void replay_drafter::rollback(int32_t slot, int32_t n_context) {
  slot_state& s = open_slot(slot, "rollback");
  s.generated = std::max(0, std::min(s.generated, n_context - s.prompt_len));
}

void replay_drafter::end(int32_t slot) { open_slot(slot, "end") = slot_state{}; }

}  // namespace dspark

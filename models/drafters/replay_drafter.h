// Replayed acceptance: a drafter that reproduces the acceptance measured for a real drafter
// (a round trace, models/drafters/round_trace.h) on a target it was never trained for, such as
// the 8B shapes with synthetic random weights in bench/bench_load.cpp. Figures it produces
// are "replayed acceptance" figures: the target, the verification, the policy and the timing
// are real; WHICH drafts are accepted comes from the trace.
//
// How: every prompt comes with its oracle, the target's own greedy continuation computed once
// up front by plain decoding on the same backend (compute_replay_oracles). Each request is
// assigned trace records in turn (request n starts at record n mod R and walks on through the
// following records when one runs out of rounds); each propose takes the next recorded round
// (c_1..c_g, a) and writes
//   drafts 1..a      the oracle's next tokens (the target will accept them),
//   drafts a+1..g    a deliberately wrong token (oracle + 1 mod V: rejected),
// with confidences c_k and one-hot p_d. The real verifier then accepts exactly min(l, a) of
// the l drafts the policy admits, so every policy schedules on real confidences and the
// output is the target's (lossless for real: at temperature 0 it equals plain decoding).
// Greedy only: at temperature > 0 a one-hot draft is accepted with p_t(x), not by the trace.
//
// Oracle misses: bf16 kernels are not bit-invariant across batch shapes, so a near-tie can
// make the committed context leave the oracle. Every committed token is compared with the
// oracle; on the first difference the request counts one miss and proposes no drafts from
// then on (plain decoding: conservative against speculation). Misses are reported.
//
// Cost: drafting is not free in a real system, so each propose runs the target's first
// n_layers layers (backend::forward_prefix, on the target's own KV like the shared-cache
// layer-skip drafter) over g rows per proposing request ([x0, x_1..x_{g-1}], the shape of
// DSpark's one parallel block pass), with the LM head on the last row of each request
// (logits = last) or on all g rows (logits = all), and then truncates the target's sequences
// back to their committed length (O(1)). Default 2 layers: a DSpark-sized drafter at the
// target's width (the method's 2-layer DSpark). n_layers 0 charges nothing (unit tests).
// With features=N it also declares N capture layers (spread_capture_layers), so every verify
// forward and prompt chunk captures them and the backend hands them to the host, and it gathers
// each committed row's features into a staging ring as the trained drafters do before their
// upload: the cost of a feature-reading drafter's host path, which the draft pass alone leaves
// out (5 layers of a 4096-wide target are 80 KB a row). With features_on=device it reads them
// as a GPU drafter with DSPARK_DEVICE_FEATURES=1 does: the target keeps them on the device (no
// copy to the host) and the replay counts the committed rows; the GPU drafter's gather kernel
// (one per forward, microseconds) is not charged.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/backend.h"
#include "engine/sampler.h"
#include "models/drafters/drafter.h"
#include "models/drafters/round_trace.h"

namespace dspark {

class tokenizer;

// A prompt and the target's greedy continuation of it (plain decoding's token ids).
struct replay_oracle {
  std::vector<int32_t> prompt;
  std::vector<int32_t> continuation;
};

// Plain greedy decoding of every prompt on `be`, batch requests at a time (continuous
// batching through spec_decoder without a drafter), up to params.max_tokens tokens each: a
// request with a smaller max_tokens uses a prefix of its oracle. invalid_argument_error unless
// params.temperature is 0.
std::vector<replay_oracle> compute_replay_oracles(backend& be, std::span<const std::vector<int32_t>> prompts,
                                                  const sampling_params& params, const tokenizer* tok,
                                                  std::span<const int32_t> stop_ids, int32_t batch);

struct replay_drafter_params {
  int32_t max_slots = 1;
  int32_t n_layers = 2;            // target layers each propose runs; 0: no cost
  bool all_logits = false;         // LM head on every drafted row (true) or the last (false)
  backend* target = nullptr;       // the target, for the cost; needed when n_layers > 0
  std::vector<int32_t> capture_layers;  // target layers whose features it reads (empty: none)
  int64_t n_embd = 0;              // the target's width; needed with capture_layers
  // Read the rows where a CUDA target keeps them (drafter_caps::reads_device_features) instead
  // of having them copied to the host and gathering them there.
  bool device_features = false;
};

// "replay:TRACE[,layers=N][,logits=all|last][,features=F][,features_on=host|device]" -> (trace
// path, params fields).
// Throws invalid_argument_error naming the valid form for anything else.
struct replay_spec {
  std::string trace_path;
  int32_t n_layers = 2;
  bool all_logits = false;
  int32_t feature_layers = 0;      // capture layers to read, [0, 8]
  bool device_features = false;    // features_on=device
};
replay_spec parse_replay_spec(const std::string& spec);

// `count` target layers spread evenly over 1 .. n_layer - 2 (the trained drafters' default
// for SmolLM2's 30 layers is 1, 8, 15, 22, 28; this gives 1, 8, 15, 21, 28). invalid_argument_error
// unless 1 <= count <= n_layer - 2.
std::vector<int32_t> spread_capture_layers(int32_t n_layer, int32_t count);

class replay_drafter final : public drafter {
 public:
  // trace with at least one round; oracles for every prompt the decoder will begin(); n_vocab
  // of the target. invalid_argument_error for an empty trace, bad sizes, or n_layers > 0
  // without a target that supports forward_prefix (n_layers beyond the target's depth fails in
  // the first propose, from forward_prefix).
  replay_drafter(round_trace trace, std::vector<replay_oracle> oracles, int64_t n_vocab,
                 const replay_drafter_params& p);

  const drafter_caps& caps() const override { return caps_; }
  // invalid_argument_error when `prompt` has no oracle.
  void begin(int32_t slot, std::span<const int32_t> prompt) override;
  void propose(std::span<const propose_request> batch, draft_batch& out) override;
  void on_commit(int32_t slot, const commit_info& c) override;
  void rollback(int32_t slot, int32_t n_context) override;
  void end(int32_t slot) override;

  // Requests whose committed tokens left their oracle (each counted once).
  int64_t oracle_misses() const { return misses_; }
  // Feature rows gathered in on_commit so far (0 without capture layers).
  int64_t feature_rows() const { return feature_rows_; }
  // Trace rounds replayed (proposes that drafted) so far.
  int64_t rounds_replayed() const { return rounds_replayed_; }
  int64_t requests_begun() const { return begun_; }
  // The next request begins at record 0 again, as the first did. Between load levels (no
  // request open), so that every run of a level replays the same records for the same prompts
  // (bench_load restarts its prompt cycle there too). invalid_argument_error while one is open.
  void restart_assignment();

 private:
  struct slot_state {
    bool open = false;
    bool diverged = false;
    const replay_oracle* oracle = nullptr;
    int32_t prompt_len = 0;
    int32_t generated = 0;   // committed tokens compared with the oracle so far
    size_t record = 0;       // trace cursor: record, round
    size_t round = 0;
  };
  slot_state& open_slot(int32_t slot, const char* who);
  const trace_round& next_round(slot_state& s);
  void charge(std::span<const propose_request> batch, const draft_batch& out);

  round_trace trace_;
  std::vector<size_t> records_;  // indices of records with rounds
  std::vector<replay_oracle> oracles_;
  std::unordered_multimap<uint64_t, size_t> by_prompt_;  // prompt hash -> oracle index
  int64_t n_vocab_;
  replay_drafter_params p_;
  drafter_caps caps_;
  std::vector<slot_state> slots_;  // [max_slots]
  int64_t begun_ = 0;
  int64_t misses_ = 0;
  int64_t rounds_replayed_ = 0;
  // Cost-pass scratch, sized at construction.
  std::vector<int32_t> tok_buf_;
  std::vector<batch_sequence> seqs_;
  std::vector<std::pair<int32_t, int32_t>> restore_;  // (target seq, committed length)
  // Feature staging: a ring of k_staging_rows rows of all capture layers.
  static constexpr int64_t k_staging_rows = 64;
  std::vector<float> staging_;
  int64_t feature_rows_ = 0;
};

}  // namespace dspark

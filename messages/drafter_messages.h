// Messages between the verifier (its remote_drafter) and a drafter service (binary,
// messages/wire.h). They mirror the drafter interface (models/drafters/drafter.h) call for call:
//
//   drafter -> verifier: hello (on connect: name and capabilities), proposal (reply to propose)
//   verifier -> drafter: reset, begin, propose, commit, rollback, end
//
// The drafter keeps each slot's context itself (begin's prompt + every commit's tokens, cut by
// rollback), so propose carries only the context length, which the drafter checks against its
// copy: a drafter that fell out of step proposes nothing for that slot instead of guessing.
// Frames between one verifier and one drafter arrive in order (ROUTER/DEALER), so a commit
// always reaches the drafter before the next propose.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "engine/spec/draft_batch.h"

namespace dspark::msg {

inline constexpr uint32_t k_max_batch = 4096;
inline constexpr uint32_t k_max_chain = 256;
inline constexpr uint32_t k_max_sparse = 1u << 18;  // a dense row travels as its support
inline constexpr uint32_t k_max_feature_floats = 64u << 20;  // 256 MiB of f32

enum class drafter_type : uint16_t {
  hello = 100,
  proposal = 101,
  reset = 110,
  begin = 111,
  propose = 112,
  commit = 113,
  rollback = 114,
  end = 115,
};

struct drafter_hello {
  std::string name;                      // "ngram", "layerskip:8", ...
  draft_dist_kind dist_kind = draft_dist_kind::one_hot;
  int32_t max_sparse = 0;
  std::vector<int32_t> capture_layers;
};

// Drop every slot. When the verifier shares a host memory segment for features (co-located
// drafters: ipc/inproc links), it is named here; commits then point into it.
struct drafter_reset {
  std::string shm_name;    // POSIX shared memory name ("" = features travel inline)
  uint64_t shm_bytes = 0;  // the segment's size
};

struct drafter_begin {
  int32_t slot = 0;
  std::vector<int32_t> prompt;
};

// One request of a propose call (the drafter's propose_request without the context).
struct propose_item {
  int32_t slot = 0;
  int32_t max_drafts = 0;
  int32_t context_len = 0;  // the verifier's context length; must equal the drafter's copy
  uint64_t rng_seed = 0;
  uint64_t rng_round = 0;
  float temperature = 0;
  int32_t top_k = 0;
  float top_p = 1;
  float min_p = 0;
};

struct drafter_propose {
  uint64_t seq = 0;  // echoed by the proposal; a late reply to an earlier seq is dropped
  std::vector<propose_item> items;
};

// One draft token: its confidence and the distribution it was drawn from (empty ids/probs: a
// point mass on `token`).
struct draft_token {
  int32_t token = 0;
  float confidence = 1;
  std::vector<int32_t> sparse_ids;
  std::vector<float> sparse_probs;
};

struct slot_drafts {
  int32_t slot = 0;
  std::vector<draft_token> drafts;
};

struct drafter_proposal {
  uint64_t seq = 0;
  std::vector<slot_drafts> slots;
};

struct drafter_commit {
  int32_t slot = 0;
  std::vector<int32_t> tokens;
  int32_t n_accepted = 0;
  int32_t n_proposed = 0;
  // Target features of the committed rows: [n_layers][n_rows][n_embd] f32, either inline in
  // `features` or, with features_shm, at byte shm_offset of the reset's shared segment
  // (`features` empty). n_layers 0: none.
  int32_t n_layers = 0;
  int32_t n_rows = 0;
  int64_t n_embd = 0;
  bool features_shm = false;
  uint64_t shm_offset = 0;
  std::vector<float> features;
};

struct drafter_rollback {
  int32_t slot = 0;
  int32_t n_context = 0;
};

struct drafter_end {
  int32_t slot = 0;
};

using drafter_message = std::variant<drafter_hello, drafter_proposal, drafter_reset, drafter_begin,
                                     drafter_propose, drafter_commit, drafter_rollback, drafter_end>;

void encode(const drafter_hello& m, std::string& out);
void encode(const drafter_proposal& m, std::string& out);
void encode(const drafter_reset& m, std::string& out);
void encode(const drafter_begin& m, std::string& out);
void encode(const drafter_propose& m, std::string& out);
void encode(const drafter_commit& m, std::string& out);
void encode(const drafter_rollback& m, std::string& out);
void encode(const drafter_end& m, std::string& out);

// Decodes one frame; wire_error naming the problem for anything malformed (sizes are checked
// against the limits above and against each other: sparse ids and probs of equal length,
// features of exactly n_layers * n_rows * n_embd floats).
drafter_message decode_drafter_message(std::string_view frame);

}  // namespace dspark::msg

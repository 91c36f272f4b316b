// The interface every execution backend implements (CPU now, CUDA later): a forward pass over
// a ragged batch of sequences plus the KV bookkeeping the decoders need.
//
// A ragged batch: several sequences, each appending n_tokens >= 1 new tokens at its current
// logical length. Tokens of one sequence are causal among themselves and attend to the
// sequence's cached prefix. The caller chooses, per sequence, how many trailing tokens get
// logits: 0 (a prefill chunk that is not the last), 1 (plain decoding) or n_tokens
// (speculative verification scores every draft position).
//
// Worked example: seqs = {{seq 0, 3 tokens, 3 logits}, {seq 1, 1 token, 1 logit}},
// tokens = [a b c | d]. Seq 0 (length 5 before) gets a, b, c at positions 5, 6, 7 and seq 1
// (length 9 before) gets d at position 9. Logits come back as 4 rows in batch order:
// [seq0@5, seq0@6, seq0@7, seq1@9]; afterwards lengths are 8 and 10.
//
// Nothing here is CPU-specific: the CUDA backend keeps its own KV cache and buffers, and
// returns host pointers to logits it has copied back.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

namespace dspark {

// One sequence's slice of a ragged batch.
struct batch_sequence {
  int32_t seq_id = 0;
  int32_t n_tokens = 1;  // new tokens, >= 1, appended at the sequence's current length
  int32_t n_logits = 1;  // trailing new tokens that get logits (and captured hidden states)
};

struct forward_batch {
  std::span<const int32_t> tokens;        // [sum n_tokens] token ids, sequences concatenated
  std::span<const batch_sequence> seqs;   // [n_seqs] distinct open sequences
  // Optional: layers after which to capture the residual stream (0 = after the first layer,
  // n_layer - 1 = after the last, before the final norm) for the logit rows. Empty: none.
  std::span<const int32_t> capture_layers;
};

enum class forward_status : int {
  ok = 0,
  out_of_kv = 1,  // the KV cache has no room for the batch; nothing was changed
};

struct forward_output {
  forward_status status = forward_status::ok;
  int64_t n_rows = 0;       // sum of n_logits
  // [n_rows, n_vocab] f32, host memory owned by the backend, valid until the next forward.
  const float* logits = nullptr;
  // [n_capture_layers][n_rows][n_embd] f32 when capture_layers was given, else null.
  const float* hidden = nullptr;
};

struct backend_limits {
  int32_t max_tokens_per_step = 0;  // largest sum of n_tokens in one forward
  int32_t max_logit_rows = 0;       // largest sum of n_logits in one forward
  int32_t max_capture_layers = 0;
  int32_t n_seq_max = 0;            // sequences open at once
  int32_t n_ctx = 0;                // longest sequence
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
};

class backend {
 public:
  virtual ~backend() = default;

  virtual const backend_limits& limits() const = 0;

  // A fresh sequence of length 0; nullopt when n_seq_max are already open.
  virtual std::optional<int32_t> open_sequence() = 0;
  // Releases the sequence and its KV space.
  virtual void free_sequence(int32_t seq) = 0;
  // Tokens whose K/V the sequence holds.
  virtual int32_t sequence_length(int32_t seq) const = 0;
  // Rolls the sequence back to new_len <= length (rejected draft tokens), O(1).
  virtual void truncate(int32_t seq, int32_t new_len) = 0;

  // Runs the batch, appends its K/V and returns the requested logits. Throws
  // invalid_argument_error for a malformed batch (unknown or repeated sequence, token id out
  // of range, n_tokens or n_logits out of range, too many tokens); returns out_of_kv, with no
  // state changed, when the cache cannot hold the new tokens.
  virtual forward_output forward(const forward_batch& batch) = 0;
};

}  // namespace dspark

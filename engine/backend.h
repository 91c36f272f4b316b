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
// Captured hidden states (forward_batch::capture_layers) cover each sequence's trailing
// n_capture tokens, n_capture >= n_logits (default: the logit rows). A drafter that needs the
// target's features of every prompt row asks for them on prefill chunks without paying for
// their logits: {seq 0, 3 tokens, n_logits 1, n_capture 3} gives 1 logit row (seq0@7) and 3
// hidden rows per captured layer (seq0@5, seq0@6, seq0@7).
//
// Nothing here is CPU-specific: the CUDA backend keeps its own KV cache and buffers, and
// returns host pointers to logits it has copied back.
//
// Argmax rows (forward_batch::outputs): a greedy caller needs only each logit row's largest
// entry, so it may ask for row_outputs::argmax and get one token id per row (lowest id on ties,
// NaN skipped: argmax_index's rule, engine/spec/verify.h) instead of [n_rows, n_vocab] floats.
// The CUDA backend then computes the ids on the device and copies n_rows int32 back, not the
// whole logit rows (at 256 rows of a 151,936-token vocabulary: 1 KB instead of 155 MB per step);
// the CPU backend computes the logits anyway and scans them. Logits come back only when asked
// (row_outputs::logits, the default, or logits_and_argmax); otherwise forward_output::logits
// is null.
//
// Automatic prefix caching (both backends; engine/kv_block_pool.h): a caller that knows a
// sequence's tokens publishes its full KV blocks with cache_prefix(); a new sequence whose
// prompt starts with the same tokens calls attach_prefix() first, shares those blocks and
// forwards only the rest:
//
//   seq = open_sequence();
//   n = attach_prefix(seq, prompt);              // e.g. 512 of 528 prompt tokens cached
//   forward(prompt[n ..]) in chunks              // positions n .. 527 only
//   cache_prefix(seq, prompt);                   // its own full blocks, for the next prompt
//
// The logits are the ones a cold prefill gives, bit for bit, wherever a row's result does not
// depend on the other rows of its batch (the CPU backend always; the CUDA backend for steps
// within its GEMV path).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "common/error.h"
#include "engine/kv_block_pool.h"

namespace dspark {

// One sequence's slice of a ragged batch.
struct batch_sequence {
  int32_t seq_id = 0;
  int32_t n_tokens = 1;  // new tokens, >= 1, appended at the sequence's current length
  int32_t n_logits = 1;  // trailing new tokens that get logits
  // Trailing new tokens whose hidden states are captured when capture_layers is given, in
  // [n_logits, n_tokens]; -1 (default) = n_logits.
  int32_t n_capture = -1;

  int32_t capture_count() const { return n_capture < 0 ? n_logits : n_capture; }
};

// What forward() returns for the logit rows.
enum class row_outputs : uint8_t {
  logits = 0,             // forward_output::logits
  argmax = 1,             // forward_output::argmax only
  logits_and_argmax = 2,  // both
};

inline bool wants_logits(row_outputs o) { return o != row_outputs::argmax; }
inline bool wants_argmax(row_outputs o) { return o != row_outputs::logits; }

struct forward_batch {
  std::span<const int32_t> tokens;        // [sum n_tokens] token ids, sequences concatenated
  std::span<const batch_sequence> seqs;   // [n_seqs] distinct open sequences
  // Optional: layers after which to capture the residual stream (0 = after the first layer,
  // n_layer - 1 = after the last, before the final norm) for each sequence's trailing
  // capture_count() rows. Empty: none.
  std::span<const int32_t> capture_layers;
  row_outputs outputs = row_outputs::logits;  // logits, per-row argmax ids, or both
  // The caller reads the captured rows in device memory (forward_output::hidden_device): a
  // backend that has them there may skip the copy to the host (hidden is then null). A backend
  // without device memory ignores it and fills hidden as usual.
  bool hidden_on_device = false;
};

// Throws invalid_argument_error unless s.n_capture is -1 or in [n_logits, n_tokens]; part of
// every backend's batch validation.
inline void validate_capture(const batch_sequence& s) {
  if (s.n_capture != -1 && (s.n_capture < s.n_logits || s.n_capture > s.n_tokens))
    throw invalid_argument_error("forward: n_capture must be -1 or in [n_logits = " + std::to_string(s.n_logits) +
                                 ", n_tokens = " + std::to_string(s.n_tokens) + "], got " +
                                 std::to_string(s.n_capture));
}

// Throws invalid_argument_error unless o is one of row_outputs' values; part of every backend's
// batch validation.
inline void validate_outputs(row_outputs o) {
  if (static_cast<uint8_t>(o) > static_cast<uint8_t>(row_outputs::logits_and_argmax))
    throw invalid_argument_error("forward: unknown outputs value " + std::to_string(static_cast<int>(o)));
}

enum class forward_status : int {
  ok = 0,
  out_of_kv = 1,  // the KV cache has no room for the batch; nothing was changed
};

struct forward_output {
  forward_status status = forward_status::ok;
  int64_t n_rows = 0;       // sum of n_logits
  // [n_rows, n_vocab] f32, host memory owned by the backend, valid until the next forward;
  // null when the batch asked for argmax ids only.
  const float* logits = nullptr;
  // [n_rows] token id of each row's largest logit (lowest id on ties, NaN skipped) when the
  // batch asked for them, else null. Host memory, valid until the next forward.
  const int32_t* argmax = nullptr;
  // [n_capture_layers][n_hidden_rows][n_embd] f32 when capture_layers was given, else null.
  // Rows in batch order, each sequence's captured rows in position order (the logit rows'
  // order when every n_capture is the default). Host memory, valid until the next forward.
  const float* hidden = nullptr;
  int64_t n_hidden_rows = 0;  // sum of capture_count() when capture_layers was given, else 0
  // The same rows in the backend's device memory (CUDA), when it has them: row i of captured
  // layer l at hidden_device + l * hidden_device_layer_stride + i * n_embd. Valid until the next
  // forward, which the backend enqueues on hidden_stream (a cudaStream_t): a reader on another
  // stream makes hidden_stream wait for its reads (an event) before that forward is called.
  // Null on backends without device memory.
  const float* hidden_device = nullptr;
  int64_t hidden_device_layer_stride = 0;  // floats between layers
  void* hidden_stream = nullptr;
};

struct backend_limits {
  int32_t max_tokens_per_step = 0;  // largest sum of n_tokens in one forward
  int32_t max_logit_rows = 0;       // largest sum of n_logits in one forward
  int32_t max_capture_layers = 0;
  int32_t n_seq_max = 0;            // sequences open at once
  int32_t n_ctx = 0;                // longest sequence
  int64_t n_vocab = 0;
  int64_t n_embd = 0;
  int32_t kv_block_size = 0;        // positions per KV block (the prefix cache's unit); 0: unknown
};

// How a backend's forward steps were launched (backends without CUDA graphs report zeros). A
// step replays a captured graph, is captured (its shape's second sighting), or runs eagerly:
// the first sighting of a shape, a shape too large to graph, or a graphable shape the full
// graph cache could not take (eager_cache_full). Eager steps pay a host launch per kernel, which
// on a small model costs more than the kernels themselves.
struct graph_launch_stats {
  int64_t replayed = 0;
  int64_t captured = 0;
  int64_t eager = 0;             // all eager steps, eager_cache_full included
  int64_t eager_cache_full = 0;
  int32_t graphs = 0;            // captured graphs held now
  // cuBLASLt shapes whose algorithm was chosen by timing on their first step, and the host time
  // that took (kernels/cuda/gemm.h): a one-off stall of that step
  int64_t gemm_shapes_timed = 0;
  double gemm_timing_ms = 0;
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

  // Prefix cache (see the top of this file); backends without one keep these defaults.
  // Attaches to `seq` (open, length 0) the cached K/V of the longest chain of full blocks whose
  // tokens start `tokens`, never the block holding tokens.back(), and returns the positions
  // covered, now the sequence's length (a multiple of kv_block_size, 0 on a miss).
  virtual int32_t attach_prefix(int32_t seq, std::span<const int32_t> tokens);
  // Offers `seq`'s full blocks among its first min(length, tokens.size()) positions to later
  // attach_prefix() calls. `tokens` must be what the sequence holds from position 0, computed
  // by forward() (not forward_prefix() rows before their truncate).
  virtual void cache_prefix(int32_t seq, std::span<const int32_t> tokens);
  virtual prefix_cache_stats prefix_stats() const { return {}; }
  virtual graph_launch_stats graph_stats() const { return {}; }

  // Runs the batch, appends its K/V and returns the requested logits and/or argmax ids. Throws
  // invalid_argument_error for a malformed batch (unknown or repeated sequence, token id out
  // of range, n_tokens or n_logits out of range, too many tokens, an unknown outputs value);
  // returns out_of_kv, with no state changed, when the cache cannot hold the new tokens.
  virtual forward_output forward(const forward_batch& batch) = 0;

  // Self-speculation on the target's own KV (layer-skip drafting): runs layers [0, n_layers)
  // only, appending their K/V at each sequence's length like forward(), then the final norm and
  // LM head on the layer-(n_layers - 1) residual of the logit rows. Layers >= n_layers hold
  // nothing valid for these positions, so the caller truncates the sequences back before the
  // next forward(), which rewrites every layer. capture_layers must be < n_layers. Backends
  // that cannot do it return false from supports_forward_prefix() and throw here.
  virtual bool supports_forward_prefix() const { return false; }
  virtual forward_output forward_prefix(const forward_batch& batch, int32_t n_layers);
};

}  // namespace dspark

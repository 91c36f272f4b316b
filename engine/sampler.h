// Sampling: parameters, the filtered probability distribution, and a seeded draw.
//
// distribution() is the single definition of "the distribution the model samples from" for
// given parameters; the speculative verifier uses it for both p_target and p_draft, so plain
// sampling and lossless verification cannot drift apart.
//
// Order of the filters (as Hugging Face's logits processors apply them):
//   1. temperature: logits / T, softmax            (T == 0: one-hot at the argmax, lowest id
//                                                   on ties (kernels' argmax); no filters)
//   2. top_k:  keep the k most probable tokens     (0 = off)
//   3. top_p:  keep the smallest most-probable set whose mass reaches p (1 = off)
//   4. min_p:  keep tokens with prob >= min_p * max prob (0 = off)
//   then renormalise. Ties in probability are broken by the lower id (deterministic).
//
// Worked example: logits [2, 1, 0, -inf], T = 1 -> probs [.665, .245, .090, 0];
//   top_k 2 -> [.731, .269, 0, 0];  top_p .6 -> [1, 0, 0, 0];  top_p .7 -> [.731, .269, 0, 0];
//   min_p .2 -> [.731, .269, 0, 0] (threshold .2 * .665 = .133).
//
// Randomness is counter-based: the draw for step `counter` of a request with seed s depends
// only on (s, counter), so a run replays exactly and a rolled-back step redraws the same value.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dspark {

struct sampling_params {
  float temperature = 0.0f;  // [0, 100]; 0 = greedy
  int32_t top_k = 0;         // >= 0; 0 = off
  float top_p = 1.0f;        // (0, 1]; 1 = off
  float min_p = 0.0f;        // [0, 1]; 0 = off
  uint64_t seed = 0;
  int32_t max_tokens = 256;  // >= 1 generated tokens at most
  std::vector<std::string> stop;  // stop strings, each non-empty; not part of the output
  // Generate through the model's end-of-sequence / end-of-turn ids (they are then ordinary
  // tokens, kept in the output) until max_tokens or a stop string: what load generators ask for
  // so that every request produces the same number of tokens.
  bool ignore_eos = false;
};

// Throws invalid_argument_error naming the first bad field and its valid range.
void validate(const sampling_params& p);

// Uniform double in [0, 1) from (seed, counter): a counter-based generator (SplitMix64 mixing).
double uniform01(uint64_t seed, uint64_t counter);

// Draws an id from probs[n] (non-negative, summing to ~1) with the uniform value u in [0, 1):
// the first id whose cumulative probability exceeds u.
int32_t sample_from(const float* probs, int64_t n, double u);

// A sampler for one request: the parameters plus scratch sized for the vocabulary, so
// distribution() and sample() allocate nothing.
class sampler {
 public:
  // Validates `p` (invalid_argument_error) and allocates the scratch.
  sampler(int64_t n_vocab, const sampling_params& p);

  const sampling_params& params() const { return p_; }
  bool greedy() const { return p_.temperature == 0.0f; }

  // probs[n_vocab] = the filtered, temperature-scaled distribution of logits[n_vocab].
  void distribution(const float* logits, float* probs);
  // The next token: argmax when greedy, else a draw from distribution() with
  // uniform01(seed, counter).
  int32_t sample(const float* logits, uint64_t counter);

 private:
  int64_t n_vocab_;
  sampling_params p_;
  std::vector<float> probs_;     // [n_vocab] scratch for sample()
  std::vector<int32_t> order_;   // [n_vocab] candidate ids, most probable first
};

}  // namespace dspark

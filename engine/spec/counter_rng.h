// Counter-based random numbers for speculative decoding: every uniform draw is a pure function
// of (request seed, round, position, purpose), never of a shared generator's state.
//
// Why counter-based: a request's output must be reproducible from its seed alone, whatever
// other requests share its batch, in whatever order the rows are processed (CPU loop or one GPU
// thread per row). A stateful generator shared by the batch would make each request's draws
// depend on its neighbours. Each (round, position, purpose) key is used for at most one
// decision, so every draw the verifier acts on is independent of everything observed before
// it, which is what the rejection-sampling proof needs.
//
// The mixer is splitmix64's finaliser applied once per key word (a small Philox-style keyed
// hash); its output passes the usual avalanche tests, and 53 bits make a double in [0, 1).
#pragma once

#include <cstdint>

namespace dspark {

// What a draw is for; distinct purposes at the same (round, position) are independent.
// Values are only ever appended.
enum class rng_purpose : uint32_t {
  accept = 0,    // acceptance test of a draft token
  residual = 1,  // sampling a correction from the residual distribution
  bonus = 2,     // sampling the bonus token after a fully accepted chain
  sample = 3,    // plain sampling (the first token after prefill, no drafts)
  draft = 4,     // a stochastic drafter's own draws
};

// splitmix64 finaliser: a bijective 64-bit mixer.
inline uint64_t splitmix64_mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// 64 random bits for the key (seed, round, position, purpose).
inline uint64_t counter_bits(uint64_t seed, uint64_t round, uint64_t position, rng_purpose purpose) {
  uint64_t h = splitmix64_mix(seed);
  h = splitmix64_mix(h ^ round);
  h = splitmix64_mix(h ^ (position * 0xd1b54a32d192ed03ULL));
  return splitmix64_mix(h ^ (static_cast<uint64_t>(purpose) + 0x8cb92ba72f3d8dd7ULL));
}

// A uniform double in [0, 1) for the key; 53 random bits.
inline double counter_uniform(uint64_t seed, uint64_t round, uint64_t position, rng_purpose purpose) {
  return static_cast<double>(counter_bits(seed, round, position, purpose) >> 11) * 0x1.0p-53;
}

// The per-request part of the key: a request's seed and its verify-round counter.
struct rng_key {
  uint64_t seed = 0;
  uint64_t round = 0;  // verify rounds completed by this request (0 for the prefill's sample)

  double uniform(uint64_t position, rng_purpose purpose) const {
    return counter_uniform(seed, round, position, purpose);
  }
};

}  // namespace dspark

// KV admission and accounting for the verifier: a request runs only when the blocks of its
// worst case fit, so a running request never meets a full cache mid-generation.
//
// The backends own the physical paged KV (engine/kv_cache.h on the CPU, the CUDA pool on the
// GPU) and allocate blocks lazily as sequences grow. kv_manager is the accounting authority
// above them: its budget is at most the backend's capacity, and it reserves, per request,
//
//   blocks = ceil(min(n_ctx, prompt + max_tokens + lookahead) / block_size)
//
// where lookahead = gamma_max + 1 (the verify forward appends x0 and up to gamma_max drafts
// before the rejected ones roll back). Since the sum of reservations never exceeds the budget,
// the backend's lazy allocation can never fail for an admitted request. finish/cancel releases
// the reservation; the backend frees the physical blocks when the decoder frees the sequence.
//
//   budget  [######## req 1 ########][#### req 2 ####][...... free ......]
//            reserved (worst case)    reserved          admits the next request that fits
//
// Prefix sharing (backend prefix cache) is counted once: the verifier sets, before each
// admission round, the shared credit S = the backend's prefix_cache_stats::shared_refs (block
// references beyond the first: blocks the running sequences' tables hold without taking them
// from the pool), and a request is admitted while  reserved + its blocks <= budget + S.
// Why that never over-commits (budget <= the pool's N blocks): with U blocks held by the
// running requests, t_a the blocks request a's table holds and w_a its reservation, the pool
// can still hand out N - U blocks (cached blocks no one holds are evictable, so they count as
// free) and request a takes at most w_a - t_a more, since it shares only at its start; and
//   sum (w_a - t_a) = sum w_a - (U + S) <= budget + S - U - S <= N - U.
// The inequality survives every event: growth adds 1 to t_a and U; an attach raises S; a
// request ending lowers sum w_a by w_a and S by at most its shared blocks <= w_a. (A truncate
// below the committed length into shared blocks could lower S; the decoding loop never does one.)
#pragma once

#include <cstdint>
#include <span>
#include <unordered_map>

namespace dspark::actors {

struct kv_manager_params {
  int32_t total_blocks = 0;  // the budget, > 0
  int32_t block_size = 16;   // positions per block, > 0
  int32_t n_ctx = 0;         // longest sequence, > 0
  int32_t lookahead = 1;     // extra positions a verify step may append, >= 0
};

// Blocks a request of this shape reserves under `p` (the formula above).
int32_t kv_blocks_for(const kv_manager_params& p, int32_t prompt_len, int32_t max_tokens);

// One waiting request's shape, as the scheduler asks kv_manager to reserve it.
struct kv_ask {
  uint64_t id = 0;  // the verifier's key for the request
  int32_t prompt_len = 0;
  int32_t max_tokens = 0;
};

// The accounting at one moment (status and metrics).
struct kv_usage {
  int32_t total = 0;   // the budget
  int32_t used = 0;    // reserved, sharing not deducted
  int32_t shared = 0;  // the shared credit
};

class kv_manager {
 public:
  // Throws invalid_argument_error for non-positive sizes.
  explicit kv_manager(const kv_manager_params& p);

  // Blocks a request of this shape reserves.
  int32_t blocks_for(int32_t prompt_len, int32_t max_tokens) const;
  // True when a request of this shape could ever be admitted (fits an empty budget).
  bool could_fit(int32_t prompt_len, int32_t max_tokens) const;
  // Reserves the request's blocks and returns true, or returns false (nothing reserved) when
  // they do not fit now (reserved + blocks > budget + shared credit). invalid_argument_error
  // when `key` already holds a reservation.
  bool try_admit(uint64_t key, int32_t prompt_len, int32_t max_tokens);
  // Reserves asks in order while they fit, stopping at the first that does not (FIFO: a head
  // that does not fit yet blocks the ones behind it); returns how many were reserved.
  int32_t reserve_prefix(std::span<const kv_ask> asks);
  // Returns the request's blocks to the budget; a key without a reservation is ignored. The
  // last release also zeroes the shared credit (with nothing admitted, nothing is shared).
  void release(uint64_t key);
  // The blocks prefix sharing saves now (see above), >= 0; 0 without a prefix cache.
  void set_shared_credit(int32_t blocks);

  int32_t total_blocks() const { return p_.total_blocks; }
  int32_t used_blocks() const { return used_; }        // reserved, sharing not deducted
  int32_t shared_blocks() const { return shared_; }
  int32_t free_blocks() const { return p_.total_blocks + shared_ - used_; }  // what may still be reserved
  int32_t admitted() const { return static_cast<int32_t>(held_.size()); }
  kv_usage usage() const { return {p_.total_blocks, used_, shared_}; }
  const kv_manager_params& params() const { return p_; }

 private:
  kv_manager_params p_;
  int32_t used_ = 0;
  int32_t shared_ = 0;
  std::unordered_map<uint64_t, int32_t> held_;  // key -> blocks reserved
};

}  // namespace dspark::actors

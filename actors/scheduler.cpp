// scheduler: see scheduler.h.
#include "actors/scheduler.h"

#include <algorithm>

#include "common/error.h"

namespace dspark::actors {

scheduler::scheduler(const kv_manager_params& shape, int32_t max_waiting) : shape_(shape), max_waiting_(max_waiting) {
  if (max_waiting <= 0)
    throw invalid_argument_error("scheduler: max_waiting must be > 0, got " + std::to_string(max_waiting));
}

queue_verdict scheduler::enqueue(waiting_request r) {
  const int32_t blocks = kv_blocks_for(shape_, static_cast<int32_t>(r.req.prompt.size()), r.req.params.max_tokens);
  if (blocks > shape_.total_blocks) return queue_verdict::too_large;
  if (queued() >= max_waiting_) return queue_verdict::overloaded;
  queue_.push_back(std::move(r));
  return queue_verdict::queued;
}

bool scheduler::remove(const std::string& peer, uint64_t key, waiting_request* out) {
  for (auto it = queue_.begin(); it != queue_.end(); ++it) {
    if (it->peer == peer && it->req.key == key) {
      if (out) *out = std::move(*it);
      queue_.erase(it);
      return true;
    }
  }
  return false;
}

bool scheduler::remove(uint64_t id) {
  return std::erase_if(queue_, [&](const waiting_request& w) { return w.id == id; }) > 0;
}

int32_t scheduler::remove_peer(const std::string& peer) {
  const auto n = std::erase_if(queue_, [&](const waiting_request& w) { return w.peer == peer; });
  return static_cast<int32_t>(n);
}

void scheduler::heads(int32_t n, std::vector<kv_ask>& out) const {
  const size_t k = std::min(queue_.size(), static_cast<size_t>(std::max(n, 0)));
  for (size_t i = 0; i < k; ++i) {
    const waiting_request& w = queue_[i];
    out.push_back(kv_ask{w.id, static_cast<int32_t>(w.req.prompt.size()), w.req.params.max_tokens});
  }
}

void scheduler::pop(int32_t n, std::vector<waiting_request>& out) {
  for (int32_t i = 0; i < n && !queue_.empty(); ++i) {
    out.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
}

void scheduler::admit(int32_t free_slots, kv_manager& kv, std::vector<waiting_request>& out) {
  asks_.clear();
  heads(free_slots, asks_);
  pop(kv.reserve_prefix(asks_), out);
}

}  // namespace dspark::actors

// scheduler: see scheduler.h.
#include "actors/scheduler.h"

namespace dspark::actors {

scheduler::scheduler(kv_manager& kv, std::unique_ptr<spec_policy> policy)
    : kv_(kv), policy_(std::make_unique<timed_policy>(std::move(policy))) {}

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

int32_t scheduler::remove_peer(const std::string& peer) {
  const auto n = std::erase_if(queue_, [&](const waiting_request& w) { return w.peer == peer; });
  return static_cast<int32_t>(n);
}

void scheduler::admit(int32_t free_slots, std::vector<waiting_request>& out) {
  while (free_slots > 0 && !queue_.empty()) {
    waiting_request& head = queue_.front();
    if (!kv_.try_admit(head.id, static_cast<int32_t>(head.req.prompt.size()), head.req.params.max_tokens)) break;
    out.push_back(std::move(head));
    queue_.pop_front();
    --free_slots;
  }
}

}  // namespace dspark::actors
